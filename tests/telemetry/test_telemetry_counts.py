"""Finished queue jobs counted incrementally, so a panel's read does not grow with the jobs
a store has ever run.

Regression (found by ``python -m benchmarks load``): every snapshot counted every end event
in the store (``COUNT(DISTINCT job)``), and each panel read asked five times (the snapshot,
three job metrics, the alerts' series); on a 100,000-job store a read took 4 to 6 s, so a
panel refreshing every second fell behind and kept a core busy.
"""

from __future__ import annotations

import random
import sqlite3
import time

from packlab.telemetry import monitor as monitor_module
from packlab.telemetry.queries import EndCounts
from packlab.telemetry.tables import Writer
from packlab.ui.feed import Feed

PATHS = (["done"], ["dead", "requeued", "done"], ["cancelled"], ["failed-final"],
         ["dead", "requeued", "dead"], ["cancelled", "requeued", "done", "requeued", "done"], [])


def _store(path: str, events: list[tuple]) -> None:
    now = time.time()
    w = Writer(path, flush_interval=0.01)
    w.put("tel_clusters", [("c1", "local", "general-batch", "tcp://x", now - 3600, None, now, 0, 1)])
    w.put("tel_workers", [("c1", "w0", "0", "h", now - 3600, None, now, 1, 1, 2**30, 0, "on-demand",
                           0, 0, 0)])
    w.close()
    _append(path, events)


def _append(path: str, events: list[tuple]) -> None:
    """``(t, job, kind)`` rows into the queue's ``events`` table, as its writer appends them."""
    with sqlite3.connect(path) as con:
        con.executemany("INSERT INTO events (job_id, t, kind, detail) VALUES (?,?,?,'')",
                        [(j, t, k) for t, j, k in events])
    con.close()


def _job_events(n: int, t0: float, prefix: str = "j") -> list[tuple]:
    rows = []
    for i in range(n):
        t = t0 + i * 1e-3
        rows += [(t, f"{prefix}{i}", k) for k in ("submitted", "running", "done")]
    return rows


def test_incremental_counts_equal_a_full_recount_after_every_batch(tmp_path):
    """Jobs that end more than once (requeued), fail, are cancelled, or have not ended,
    appended in random batches across a day boundary: after each batch the kept counts
    equal a fresh count of the whole store."""
    rng = random.Random(7)
    path = str(tmp_path / "t.db")
    _store(path, [])
    today, kept, t = 1000.0, EndCounts(), 900.0
    con = sqlite3.connect(path)
    jobs = {f"j{i}": list(rng.choice(PATHS)) for i in range(300)}
    checked = 0
    while any(jobs.values()):
        batch = []
        for _ in range(rng.randrange(1, 40)):
            live = [j for j, steps in jobs.items() if steps]
            if not live:
                break
            j = rng.choice(live)
            t += rng.random()
            batch.append((t, j, jobs[j].pop(0)))
        _append(path, batch)
        if checked == 5:
            today = 1100.0  # midnight passed: done-today counts from the new day
        assert kept.update(con, today) == EndCounts().update(con, today)
        checked += 1
    assert checked > 20
    finished, failed, _ = kept.update(con, today)
    truth = con.execute("SELECT COUNT(DISTINCT job_id) FROM events WHERE kind IN "
                        "('done', 'failed-final', 'dead', 'cancelled')").fetchone()[0]
    assert finished == truth and failed > 0
    con.close()


def _steps_of_a_read(monkeypatch, path: str, new: list[tuple]) -> tuple[int, object]:
    """SQLite VM steps (in thousands) the panel's second read takes, after ``new`` events."""
    feed = Feed(path)
    feed.findings_every = 1e9  # the advisor's thread stays out of the count
    feed.read()
    steps = [0]
    real = monitor_module.open_for_reading

    def counted(store):
        p, con = real(store)
        con.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 1000)
        return p, con

    _append(path, new)
    monkeypatch.setattr(monitor_module, "open_for_reading", counted)
    frame = feed.read()
    monkeypatch.setattr(monitor_module, "open_for_reading", real)
    return steps[0], frame


def test_a_panel_read_costs_the_same_on_a_store_ten_times_larger(tmp_path, monkeypatch):
    t0 = time.time() - 1800
    cost = {}
    for n in (3_000, 30_000):
        path = str(tmp_path / f"s{n}.db")
        _store(path, _job_events(n, t0))
        steps, frame = _steps_of_a_read(monkeypatch, path, _job_events(10, time.time(), prefix="new"))
        assert frame.snapshot.jobs == n + 10  # the new jobs are seen, the old ones still counted
        cost[n] = steps
    # before the fix: about 10x (five scans of every end row per read)
    assert cost[30_000] < 1.5 * cost[3_000] + 20, cost
