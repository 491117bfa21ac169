"""The panel: server-side cost of an update, scheduler CPU with it open, report size.

    python -m benchmarks panel            # 10,000-task workload; a day of 20 workers' history
    python -m benchmarks panel --quick    # 2,000 tasks; 2 hours of history

* One panel update (``Panel.refresh()``: the feed's reads of the store, the view model,
  the Bokeh models changed in a Document) on a store of 500 workers with 100,000 sample
  rows and 100,000 task rows, after one new round of samples of every worker. Target: at
  most 100 ms. The first read (the whole history) is reported beside it.
* Scheduler CPU (``time.process_time()`` of the scheduler's process, asked over
  ``run_on_scheduler``) during a workload of trivial tasks on a 2-worker cluster, with
  the panel closed and open (``packlab dashboard`` on the cluster's store in another
  process, reading at 1 Hz, with a session open on its websocket, as a page's),
  interleaved, best of 3. Target: at most 5 % more.
* The size of ``report.html`` for a store holding a day of history of 20 workers at
  the stored resolution (1 s for the last hour, 1 min before), downsampled to
  ``packlab.panel.report-points`` points a line.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import packlab
from packlab.telemetry.plugin import _WORKER_METRICS
from packlab.telemetry.tables import Writer

from .bench_telemetry import _snapshot_store
from .table import Row


def _update(repeat: int) -> list[Row]:
    from bokeh.document import Document

    from packlab.ui.feed import Feed
    from packlab.ui.panel import Panel

    g = "panel update, 500 workers, 100,000 sample rows + 100,000 task rows"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.db")
        _snapshot_store(path)
        t0 = time.perf_counter()
        p = Panel(Feed(path))
        first = time.perf_counter() - t0
        doc = Document()
        doc.add_root(p.layout)
        times = []
        for k in range(repeat):
            now = time.time()
            w = Writer(path, flush_interval=0.05)
            w.put("tel_samples", [(now + k * 1e-3, f"w{i}", m, 1.0) for i in range(500)
                                  for m in _WORKER_METRICS])
            w.close()
            t0 = time.perf_counter()
            p.refresh()
            times.append(time.perf_counter() - t0)
    return [Row(g, "update (median)", statistics.median(times) * 1e3, "ms", baseline=True,
                higher_is_better=False,
                note=f"target <= 100 ms; best {min(times) * 1e3:.0f} ms of {repeat}; 3,500 new rows each"),
            Row(g, "first read (all history)", first * 1e3, "ms", higher_is_better=False,
                note="once per page")]


def _inc(x):
    return x + 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _OpenPanel:
    """``packlab dashboard`` on ``store`` in another process, and a browser page on it."""

    def __init__(self, store: str) -> None:
        port = _free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "packlab.cli", "dashboard", "--store", store,
                                      "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        url = self.proc.stdout.readline().split(": ", 1)[1].strip()
        # a session kept open over the websocket, as a page's: the server reads at 1 Hz and
        # sends each change; the page's drawing runs on the viewer's machine, not here
        code = ("import sys; from bokeh.client import pull_session; "
                "s = pull_session(url=sys.argv[1]); print('open', flush=True); s.loop_until_closed()")
        self.viewer = subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, text=True)
        assert self.viewer.stdout.readline().strip() == "open"
        self.note = "dashboard + a websocket session (bokeh.client)"

    def close(self) -> None:
        self.viewer.terminate()
        self.viewer.wait(30)
        self.proc.terminate()
        self.proc.wait(30)


def _scheduler_cpu(pc) -> float:
    return pc.client.run_on_scheduler(lambda: time.process_time())


def _overhead(n: int, repeat: int = 3) -> list[Row]:
    g = f"scheduler CPU, {n:,} trivial tasks (client.map), 2 workers x 1 thread"
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        store = os.path.join(d, "t.db")
        with packlab.launch(workers=2, cores=1, memory="1GiB", wait=True, store=store) as pc:
            pc.client.gather(pc.client.map(_inc, range(500), pure=False))
            pc.telemetry.flush()
            cpu: dict[bool, list[float]] = {False: [], True: []}
            note = ""
            for _ in range(repeat):
                for is_open in (False, True):
                    panel = _OpenPanel(store) if is_open else None
                    try:
                        time.sleep(1.0)  # the page's first reads are over
                        c0 = _scheduler_cpu(pc)
                        pc.client.gather(pc.client.map(_inc, range(n), pure=False))
                        cpu[is_open].append(_scheduler_cpu(pc) - c0)
                    finally:
                        if panel is not None:
                            note = panel.note
                            panel.close()
    closed, opened = min(cpu[False]), min(cpu[True])
    more = opened / closed - 1
    return [Row(g, "panel closed", closed, "s CPU", baseline=True, higher_is_better=False,
                note=f"best of {repeat}; scheduler in the driver's process"),
            Row(g, "panel open (1 Hz)", opened, "s CPU", higher_is_better=False,
                note=f"{more * 100:+.1f} % (target <= 5 %); {note}; 2-core shared machine")]


def _day_store(path: str, hours: float, workers: int = 20) -> int:
    now = time.time()
    w = Writer(path, flush_interval=0.5)
    w.put("tel_clusters", [("c", "local", "general-batch", "tcp://x", now - hours * 3600, None, now, 0, 0)])
    w.put("tel_workers", [("c", f"w{i}", str(i), "h", now - hours * 3600, None, now, 2, 2, 4 * 2**30, 0,
                           "on-demand", 0.0, 0, 0) for i in range(workers)])
    times = [now - hours * 3600 + 60 * k for k in range(int(max(0, hours - 1) * 60))]
    times += [now - min(hours, 1) * 3600 + s for s in range(int(min(hours, 1) * 3600))]
    n = 0
    for t in times:
        rows = [(t, f"w{i}", m, float(i)) for i in range(workers) for m in _WORKER_METRICS]
        rows += [(t, "", m, 1.0) for m in ("utilisation", "workers", "threads", "tasks_processing")]
        rows += [(t, s, "queue_depth", 5.0) for s in ("", "priority:high", "priority:normal", "owner:a")]
        w.put("tel_samples", rows)
        n += len(rows)
    w.put("tel_tasks", [("c", f"f-{k}", "f", None, f"w{k % workers}", times[0] + k, times[0] + k + 0.5,
                         "memory" if k % 50 else "erred") for k in range(2000)])
    w.close()
    return n


def _report_size(hours: float) -> list[Row]:
    from packlab.ui import report

    g = f"report.html, {hours:g} h of history of 20 workers (1 s for the last hour, 1 min before)"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.db")
        rows = _day_store(path, hours)
        t0 = time.perf_counter()
        out = report.write(path, os.path.join(d, "report.html"))
        took = time.perf_counter() - t0
        size = os.path.getsize(out)
    return [Row(g, "report.html", size / 2**20, "MiB", baseline=True, higher_is_better=False,
                note=f"{rows:,} sample rows; written in {took:.1f} s; BokehJS inline ~1.6 MiB of it")]


def run(quick: bool = False) -> list[Row]:
    rows = _update(5 if quick else 20)
    rows += _overhead(2000 if quick else 10_000)
    rows += _report_size(2 if quick else 24)
    return rows
