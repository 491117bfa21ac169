"""Telemetry: collection overhead, store growth, and the monitor's snapshot time.

    python -m benchmarks telemetry            # 10,000 tasks and jobs; one simulated hour
    python -m benchmarks telemetry --quick    # 2,000 tasks and jobs; 10 simulated minutes

* Overhead: the same workload on two LocalClusters (2 workers x 1 thread, TLS), one
  launched with ``telemetry=False`` and one with it on (1 Hz sampling, the default),
  interleaved, best of 3: 10,000 trivial tasks (``client.map``) and a 10,000-job
  ``JobQueue`` (whose store then also holds the cluster's telemetry). Target: at most
  3 % throughput loss.
* Store growth: a simulated 100-worker cluster sampled at 1 Hz (every per-worker and
  cluster series the plugin writes) through the real writer, as bytes per hour of
  history, then after downsampling (that hour older than an hour: 1 min buckets).
* ``Monitor.snapshot()`` on a store with 500 workers, 100,000 sample rows and 100,000
  task rows. Target: at most 50 ms.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
import warnings

import packlab
from packlab.queue import JobQueue
from packlab.queue.schema import connect
from packlab.telemetry.plugin import _WORKER_METRICS
from packlab.telemetry.store import Writer, downsample_store

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


def _overhead(n: int, repeat: int = 3) -> list[Row]:
    off, on = _launch(False), _launch(True)
    times: dict[tuple[str, bool], list[float]] = {}
    cpu: dict[tuple[str, bool], list[float]] = {}  # this process: client, scheduler, plugin, writer
    with off, on, tempfile.TemporaryDirectory() as d:
        for pc in (off, on):  # warm up
            pc.client.gather(pc.client.map(_inc, range(200), pure=False))
            _queue(pc, d, 300)
        for _ in range(repeat):
            for pc, flag in ((off, False), (on, True)):
                for what, work in (("tasks", _tasks), ("queue", _queue)):
                    t0, c0 = time.perf_counter(), time.process_time()
                    work(pc, d, n)
                    times.setdefault((what, flag), []).append(time.perf_counter() - t0)
                    cpu.setdefault((what, flag), []).append(time.process_time() - c0)
        on.telemetry.flush()
    rows = []
    for what, g in (("tasks", f"{n:,} trivial tasks (client.map), 2 workers x 1 thread"),
                    ("queue", f"{n:,}-job JobQueue (fifo, SQLite store), 2 workers x 1 thread")):
        t_off, t_on = min(times[(what, False)]), min(times[(what, True)])
        c_off, c_on = (min(cpu[(what, f)]) * 1e6 / n for f in (False, True))
        loss = 1 - t_off / t_on
        rows.append(Row(g, "telemetry off", n / t_off, "/s", baseline=True,
                        note=f"best of {repeat}; driver+scheduler CPU {c_off:.0f} us per item"))
        rows.append(Row(g, "telemetry on (1 Hz)", n / t_on, "/s",
                        note=f"loss {loss * 100:+.1f} % (target <= 3 %); CPU {c_on:.0f} us per item "
                             f"({(c_on / c_off - 1) * 100:+.1f} %); 2-core shared machine"))
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
    rows = _overhead(2000 if quick else 10_000)
    rows += _growth(600 if quick else 3600)
    rows += _snapshot(5 if quick else 20)
    return rows
