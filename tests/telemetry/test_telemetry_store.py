"""The telemetry store: its writer (batches, never blocking the queue's lock), downsampling
by age, the CLI's report and advise, and the bad-input catalogue of monitor/advise/launch."""

from __future__ import annotations

import math
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

import packlab
from packlab import store as packlab_store
from packlab.cli import main
from packlab.queue.jobstore import Store
from packlab.telemetry import series
from packlab.telemetry.tables import Writer, downsample_store, open_for_reading


def fake_cluster(path: str, workers: int = 2, seconds: float = 60.0, now: float | None = None) -> None:
    """A store as a finished cluster leaves it: workers held ``seconds``, one task each."""
    now = time.time() if now is None else now
    w = Writer(path, flush_interval=0.01)
    start = now - seconds
    w.put("tel_clusters", [("c1", "local", "general-batch", "tcp://x", start, now, now, 0, 0)])
    w.put("tel_workers", [("c1", f"w{i}", str(i), "h", start, now, now, 2, 2, 4 * 2**30, 0, "on-demand",
                           6.0, 1, 0) for i in range(workers)])
    w.put("tel_tasks", [("c1", f"f-{i}", "f", None, f"w{i}", start, start + 6.0, "memory")
                        for i in range(workers)])
    w.put("tel_samples", [(start + s, f"w{i}", "memory_peak", 2.0**30)
                          for i in range(workers) for s in (1, 2)])
    w.close()


def test_the_writer_makes_an_owner_only_packlab_store_the_queue_cli_recognises(tmp_path):
    path = str(tmp_path / "t.db")
    fake_cluster(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert packlab_store.identify(path, path) == "packlab"
    s = Store(path, mode="ro")  # the queue's own reader opens it
    assert s.counts() == {}
    s.close()


def test_a_batch_waits_while_the_queue_holds_the_write_lock_and_is_written_after(tmp_path):
    path = str(tmp_path / "t.db")
    fake_cluster(path)
    other = packlab_store.connect(path)
    w = Writer(path, flush_interval=0.02)
    other.execute("BEGIN IMMEDIATE")  # as the queue's writer does
    t0 = time.monotonic()
    w.put("tel_samples", [(1.0, "", "workers", 1.0)])
    w.flush()
    waited = time.monotonic() - t0
    assert w.error is not None and w.rows_written == 0  # kept, not lost, not raised
    other.execute("COMMIT")
    w.flush()
    assert w.error is None and w.rows_written == 1
    w.close()
    assert waited < 30  # the queue's 30 s busy timeout is not what telemetry waits


CPU = "SELECT t, value FROM tel_samples WHERE metric='cpu' AND source='x' ORDER BY t"


def test_downsampling_keeps_seconds_for_an_hour_minutes_for_a_week_and_is_idempotent(tmp_path):
    path = str(tmp_path / "t.db")
    fake_cluster(path)
    now = 10 * 86400.0
    rows = [(now - age, float(age % 7)) for age in range(0, 3 * 3600, 1)]  # 3 h at 1 Hz
    rows += [(now - 8 * 86400 - k * 60.0, 1.0) for k in range(180)]  # 3 h at 1/min, 8 days ago
    w = Writer(path)
    w.put("tel_samples", [(t, "x", "cpu", v) for t, v in rows])
    w.put("tel_samples", [(t, "x", "memory_peak", v) for t, v in rows])
    w.put("tel_samples", [(t, "x", "busy_seconds", t) for t, _ in rows])  # a counter: the last stays
    w.close()
    con = packlab_store.connect(path)
    removed = downsample_store(con, now)
    got = con.execute(CPU).fetchall()
    assert got == series.downsample(rows, now, how="mean")
    peaks = con.execute(CPU.replace("'cpu'", "'memory_peak'")).fetchall()
    assert peaks == series.downsample(rows, now, how="max") and max(v for _, v in peaks) == 6.0
    busy = con.execute(CPU.replace("'cpu'", "'busy_seconds'")).fetchall()
    assert busy == series.downsample([(t, t) for t, _ in rows], now, how="last")
    assert removed > 0 and len(got) < len(rows) and len(got) <= series.max_rows(9 * 86400) + 1
    assert downsample_store(con, now) == 0  # again at the same time: nothing changes
    later = now + 7200  # two hours on: only what aged since is merged
    downsample_store(con, later)
    again = con.execute(CPU).fetchall()
    assert again == series.downsample(got, later, how="mean")


# -- the CLI ---------------------------------------------------------------------------------
def test_report_prints_the_five_metrics_cost_and_findings_and_writes_html(tmp_path):
    path = str(tmp_path / "t.db")
    fake_cluster(path)
    out = tmp_path / "r.html"
    r = CliRunner().invoke(main, ["report", "--store", path, "-o", str(out)])
    assert r.exit_code == 0, r.output
    for label in ("queue depth", "worker utilisation", "job duration p50 / p95", "failure rate",
                  "cost per job",
                  "idle", "top findings", "memory-hog"):
        assert label in r.output
    assert "worker utilisation        5.0 %" in r.output  # 12 task-s of 2 x 2 threads x 60 s
    page = out.read_text()
    # the panel's page (packlab.ui.report): BokehJS inline, nothing loaded from a network
    assert page.lstrip().startswith("<!DOCTYPE html>") and "memory-hog" in page
    assert "Worker health" in page and not re.search(r"<(script|link)[^>]+(src|href)=\"?https?:", page)
    r = CliRunner().invoke(main, ["advise", "--store", path])
    assert r.exit_code == 0 and "[warning] memory-hog" in r.output and "fix: packlab.launch(" in r.output


def test_the_cli_report_runs_as_a_command(tmp_path):
    path = str(tmp_path / "t.db")
    fake_cluster(path)
    out = subprocess.run(["packlab", "report", "--store", path], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "cost per job" in out.stdout, out.stderr


@pytest.mark.parametrize("args, names", [
    (["report", "--store", "{tmp}/missing.db"], "--store"),
    (["advise", "--store", "{tmp}/queue-only.db"], "--store"),
    (["report", "--store", "{tmp}/t.db", "-o", "{tmp}/no/such/dir/r.html"], "--output"),
    (["report", "--store", "{tmp}/other.db"], "--store"),
])
def test_bad_cli_input_exits_2_naming_the_option(tmp_path, args, names):
    fake_cluster(str(tmp_path / "t.db"))
    Store(str(tmp_path / "queue-only.db")).close()  # a queue store with no telemetry
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE x (y)")
    r = CliRunner().invoke(main, [a.format(tmp=tmp_path) for a in args])
    assert r.exit_code == 2, r.output
    assert names in r.output and "Traceback" not in r.output


# -- bad input through the API -----------------------------------------------------------------
def test_bad_input_catalogue(tmp_path):
    path = str(tmp_path / "t.db")
    fake_cluster(path)
    qonly = str(tmp_path / "q.db")
    Store(qonly).close()
    with pytest.raises(packlab.PacklabError, match="holds no telemetry") as e:
        packlab.monitor(qonly)
    assert e.value.field == "store"
    with pytest.raises(packlab.PacklabError, match="no queue store at"):
        packlab.advise(str(tmp_path / "missing.db"))
    m = packlab.monitor(path)
    with pytest.raises(packlab.PacklabError, match=r"since=.* is invalid: expected a time no later than"):
        m.history("cpu", since=time.time(), until=time.time() - 60)
    with pytest.raises(packlab.PacklabError, match="Did you mean 'memory'"):
        m.history("memroy")
    with pytest.raises(packlab.PacklabError, match="since="):
        m.history("cpu", since="yesterday")
    with pytest.raises(packlab.PacklabError, match="cluster_or_store"):
        packlab.monitor(42)
    with pytest.raises(packlab.PacklabError, match="pricing"):
        packlab.monitor(path, pricing={"core_hour": 1})
    with pytest.raises(packlab.PacklabError, match="sink"):
        m.add_sink(print)
    with pytest.raises(packlab.PacklabError, match="thresholds"):
        packlab.advise(m, thresholds={"idle_after": 1})
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (y)")
    before = other.read_bytes()
    with pytest.raises(packlab.PacklabError, match="not a packlab store") as e:  # nothing starts
        packlab.launch(workers=1, cores=1, memory="1GiB", store=str(other))
    assert e.value.field == "store" and other.read_bytes() == before
    with pytest.raises(packlab.PacklabError, match=r"folder .* does not exist"):
        packlab.launch(workers=1, cores=1, memory="1GiB", store=str(tmp_path / "no" / "t.db"))
    with pytest.raises(packlab.PacklabError, match="telemetry="):
        packlab.launch(workers=1, cores=1, memory="1GiB", telemetry="yes")


def test_a_history_is_a_labelled_dataset_bounded_by_since_and_until(tmp_path):
    path = str(tmp_path / "t.db")
    now = time.time()
    fake_cluster(path, now=now)
    m = packlab.monitor(path)
    ds = m.history("memory_peak")
    assert ds["memory_peak"].dims == ("time", "source") and list(ds.source.values) == ["w0", "w1"]
    assert ds["memory_peak"].attrs["kind"] == "peak" and float(ds["memory_peak"].max()) == 2.0**30
    assert m.history("memory_peak", since=now - 58.5).sizes["time"] == 1
    assert m.history("memory_peak", until=now - 200).sizes["time"] == 0
    jobs = m.history("job_duration")
    assert [float(v) for v in jobs["job_duration"].values.ravel()] == [6.0, 6.0]
    assert math.isclose(m.snapshot().utilisation, 12 / 240)


def test_open_for_reading_refuses_a_store_without_telemetry_before_reading_rows(tmp_path):
    qonly = str(tmp_path / "q.db")
    Store(qonly).close()
    with pytest.raises(packlab.PacklabError, match=r"Launch with packlab\.launch"):
        open_for_reading(qonly)


def test_opening_a_store_this_process_writes_keeps_its_locks_for_other_processes(tmp_path):
    """Closing a raw descriptor of the file would drop every POSIX lock this process holds
    on it: another process would then reset the WAL under the writer's feet."""
    path = str(tmp_path / "t.db")
    fake_cluster(path)
    con = packlab_store.connect(path)  # a writer of this process, as the queue's store is

    def put(n):
        with packlab_store.transaction(con):
            con.execute("INSERT INTO tel_meta VALUES (?, 0)", (f"k{n}",))

    def count_elsewhere() -> int:
        code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                "print(c.execute(\"SELECT COUNT(*) FROM tel_meta WHERE key LIKE 'k%'\").fetchone()[0])")
        out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=60)
        return int(out.stdout)

    put(1)
    open_for_reading(path)[1].close()  # what a live monitor does on every read
    Writer(path).close()  # and a recorder when a queue opens
    put(2)
    assert count_elsewhere() == 2
    put(3)
    assert count_elsewhere() == 3  # the other process did not take the WAL for unused
    con.close()
