"""Telemetry: collection overhead, store growth, and the monitor's snapshot time.

    python -m benchmarks telemetry            # 10,000 tasks and jobs; one simulated hour
    python -m benchmarks telemetry --quick    # 2,000 tasks and jobs, 5 rounds; 10 simulated minutes

* Overhead: the same workload on two LocalClusters (2 workers x 1 thread, TLS), one
  launched with ``telemetry=False`` and one with it on (1 Hz sampling, the default):
  10,000 trivial tasks (``client.map``) and a 10,000-job ``JobQueue`` (whose store then
  also holds the cluster's telemetry), in A/B pairs whose order alternates, 7 rounds.
  Reported: the median of the paired on/off ratios with its spread, for wall time and
  for CPU seconds per item (this process, holding client and scheduler, plus the
  workers; psutil), the steadier figure on a shared machine. Target: at most 3 % loss.
* Store growth: a simulated 100-worker cluster sampled at 1 Hz (every per-worker and
  cluster series the plugin writes) through the real writer, as bytes per hour of
  history, then after downsampling (that hour older than an hour: 1 min buckets).
* ``Monitor.snapshot()`` on a store with 500 workers, 100,000 sample rows and 100,000
  task rows. Target: at most 50 ms.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
import uuid
import warnings

import psutil

import packlab
from packlab.queue import JobQueue
from packlab.store import connect
from packlab.telemetry.plugin import _WORKER_METRICS
from packlab.telemetry.tables import Writer, downsample_store

from .table import Row


def _inc(x):
    return x + 1


def _launch(telemetry: bool) -> packlab.PackCluster:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        return packlab.launch(workers=2, cores=1, memory="1GiB", wait=True, telemetry=telemetry)


def _queue(pc, d: str, n: int) -> None:
    with JobQueue(pc, policy="fifo", store=os.path.join(d, f"q-{uuid.uuid4().hex}.db")) as q:
        q.map(_inc, range(n))
        q.wait()


def _tasks(pc, d: str, n: int) -> None:
    pc.client.gather(pc.client.map(_inc, range(n), pure=False))


def _cpu_seconds(worker_pids: list[int]) -> tuple[float, float]:
    """CPU seconds so far of this process (client, scheduler, plugin, writer, queue) and of
    the given worker processes (psutil: user + system)."""
    t = psutil.Process().cpu_times()
    workers = 0.0
    for pid in worker_pids:
        with contextlib.suppress(psutil.Error):
            c = psutil.Process(pid).cpu_times()
            workers += c.user + c.system
    return t.user + t.system, workers


def _measure(pc, pids, work, d: str, n: int) -> tuple[float, float, float]:
    """Wall seconds, driver CPU seconds and worker CPU seconds of one run of ``work``."""
    d0, w0 = _cpu_seconds(pids)
    t0 = time.perf_counter()
    work(pc, d, n)
    wall = time.perf_counter() - t0
    d1, w1 = _cpu_seconds(pids)
    return wall, d1 - d0, w1 - w0


def _spread(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
    return (f"median {statistics.median(xs):.3f}, IQR {q[0]:.3f}..{q[2]:.3f}, "
            f"range {min(xs):.3f}..{max(xs):.3f}")


def _overhead(n: int, repeat: int) -> list[Row]:
    """Paired A/B runs on two clusters started side by side: in each of ``repeat`` rounds
    both clusters run the same workload back to back, the order alternating (off/on,
    on/off, ...) so drift in the machine's load falls on both; each round gives one ratio
    on/off. The median of the paired ratios and its spread are the figure; CPU seconds
    (psutil: this process, which holds client and scheduler, plus the cluster's worker
    processes) per item are far steadier than wall time on a shared machine."""
    off, on = _launch(False), _launch(True)
    runs: dict[tuple[str, bool], list[tuple[float, float, float]]] = {}
    with off, on, tempfile.TemporaryDirectory() as d:
        pids = {pc is on: list(pc.client.run(os.getpid).values()) for pc in (off, on)}
        for pc in (off, on):  # warm up
            pc.client.gather(pc.client.map(_inc, range(200), pure=False))
            _queue(pc, d, 300)
        for r in range(repeat):
            for what, work in (("tasks", _tasks), ("queue", _queue)):
                for flag in ((False, True) if r % 2 == 0 else (True, False)):
                    pc = on if flag else off
                    runs.setdefault((what, flag), []).append(_measure(pc, pids[flag], work, d, n))
        on.telemetry.flush()
    rows = []
    for what, g in (("tasks", f"{n:,} trivial tasks (client.map), 2 workers x 1 thread"),
                    ("queue", f"{n:,}-job JobQueue (fifo, SQLite store), 2 workers x 1 thread")):
        a, b = runs[(what, False)], runs[(what, True)]
        wall = [y[0] / x[0] for x, y in zip(a, b, strict=True)]  # on/off, per round
        cpu = [(y[1] + y[2]) / (x[1] + x[2]) for x, y in zip(a, b, strict=True)]
        drv = [y[1] / x[1] for x, y in zip(a, b, strict=True)]
        t_off, t_on = statistics.median(x[0] for x in a), statistics.median(x[0] for x in b)
        rows.append(Row(g, "telemetry off", n / t_off, "/s", baseline=True,
                        note=f"median of {repeat} rounds, interleaved with the runs below"))
        rows.append(Row(g, "telemetry on (1 Hz)", n / t_on, "/s",
                        note=f"wall on/off per round: {_spread(wall)} (target <= 1.03)"))
        for flag, label in ((False, "telemetry off"), (True, "telemetry on (1 Hz)")):
            rs = runs[(what, flag)]
            drv_us = statistics.median(x[1] for x in rs) * 1e6 / n
            wrk_us = statistics.median(x[2] for x in rs) * 1e6 / n
            note = (f"driver+scheduler {drv_us:.0f} us + workers {wrk_us:.0f} us" + (
                f"; CPU on/off per round: {_spread(cpu)}; driver alone: median {statistics.median(drv):.3f}"
                if flag else ""))
            rows.append(Row(f"{g}: CPU seconds per item (psutil)", label, drv_us + wrk_us, "us",
                            baseline=not flag, higher_is_better=False, note=note))
    return rows


def _growth(seconds: int, workers: int = 100) -> list[Row]:
    g = f"store growth, simulated {workers}-worker cluster at 1 Hz ({seconds // 60} min simulated)"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.db")
        t0 = 1_000_000_000.0
        w = Writer(path, flush_interval=0.5)
        for s in range(seconds):
            t = t0 + s
            w.put("tel_samples", [(t, f"tls://10.0.{i // 250}.{i % 250}:40000", m, float(s * (k + 1)))
                                  for i in range(workers) for k, m in enumerate(_WORKER_METRICS)])
            w.put("tel_samples", [(t, "", m, 1.0) for m in ("utilisation", "workers", "threads",
                                                            "tasks_processing")])
            if s % 60 == 59:  # a simulated minute: let the writer keep up, as in real time
                w.flush()
        t_write = time.perf_counter()
        w.close()
        t_write = time.perf_counter() - t_write
        assert w.dropped == 0, w.dropped
        con = connect(path)
        rows = con.execute("SELECT COUNT(*) FROM tel_samples").fetchone()[0]

        def size() -> int:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return os.path.getsize(path)

        before = size()
        t_ds = time.perf_counter()
        downsample_store(con, t0 + seconds + 7200)  # the whole stretch is now over an hour old
        t_ds = time.perf_counter() - t_ds
        con.execute("VACUUM")
        after = size()
        kept = con.execute("SELECT COUNT(*) FROM tel_samples").fetchone()[0]
        con.close()
    per_hour = 3600 / seconds
    return [Row(g, "raw, 1 s resolution", before * per_hour / 2**20, "MiB/h", baseline=True,
                higher_is_better=False, note=f"{rows:,} rows; writer drained the rest in {t_write:.1f} s"),
            Row(g, "downsampled (1 min, older than 1 h)", after * per_hour / 2**20, "MiB/h",
                higher_is_better=False, note=f"{kept:,} rows; downsampling took {t_ds:.1f} s")]


def _snapshot_store(path: str, workers: int = 500, samples: int = 100_000, tasks: int = 100_000) -> None:
    now = time.time()
    w = Writer(path, flush_interval=0.5)
    w.put("tel_clusters", [("c", "local", "general-batch", "tcp://x", now - 3600, None, now, 0, 0)])
    per_worker = tasks // workers
    w.put("tel_workers", [("c", f"w{i}", str(i), "h", now - 3600, None, now, 2, 2, 4 * 2**30, 0, "on-demand",
                           per_worker * 0.5, per_worker, per_worker // 50) for i in range(workers)])
    per = samples // (workers * len(_WORKER_METRICS))
    w.put("tel_samples", [(now - 3600 + j * (3600 / per), f"w{i}", m, float(j))
                          for i in range(workers) for m in _WORKER_METRICS for j in range(per)])
    w.put("tel_tasks", [("c", f"f-{k}", "f", None, f"w{k % workers}", now - 3600 + k * 0.03,
                         now - 3600 + k * 0.03 + 0.5, "memory" if k % 50 else "erred") for k in range(tasks)])
    w.close()


def _snapshot(repeat: int) -> list[Row]:
    g = "Monitor.snapshot(), 500 workers, 100,000 sample rows + 100,000 task rows"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.db")
        _snapshot_store(path)
        m = packlab.monitor(path)
        m.snapshot()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            m.snapshot()
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        packlab.advise(m)
        t_adv = time.perf_counter() - t0
    return [Row(g, "snapshot (median)", statistics.median(times) * 1e3, "ms", baseline=True,
                higher_is_better=False, note=f"target <= 50 ms; best {min(times) * 1e3:.1f} ms of {repeat}"),
            Row(g, "advise (once)", t_adv * 1e3, "ms", higher_is_better=False, note="all 10 rules")]


def run(quick: bool = False) -> list[Row]:
    rows = _overhead(2000 if quick else 10_000, repeat=5 if quick else 7)
    rows += _growth(600 if quick else 3600)
    rows += _snapshot(5 if quick else 20)
    return rows
