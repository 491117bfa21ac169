"""The scheduler plugin that collects a cluster's telemetry (installed by ``packlab.launch``).

What it records, reusing what Dask already measures:

* per task: its compute start and stop (the ``startstops`` a worker reports), worker and
  outcome (``memory`` or ``erred``), and the queue job it ran for (from the task's key);
* per worker, from the scheduler's heartbeat metrics: CPU (``metrics["cpu"]``), process
  memory and its peak, the memory limit, bytes spilled to disk (``spilled_bytes``), and
  busy/idle thread-seconds (busy from the tasks' compute time, idle the rest of the
  threads held);
* per cluster: utilisation (threads with a task over threads), workers, threads, tasks
  on workers;
* Dask's fine performance metrics (thread CPU and non-CPU seconds, memory and disk reads,
  spilling) per queue span (owner and function) and per task prefix, as the scheduler's
  ``SpansSchedulerExtension`` adds them up from the workers' heartbeats (:mod:`.fine`).

The hooks on the scheduler's event loop only append to bounded buffers
(:class:`~.series.RingBuffer` and a ``deque``); turning them into rows and writing them
is the :class:`~.tables.Writer`'s thread's job. Sampling runs every
``packlab.telemetry.interval`` (1 s).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import deque
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from tornado.ioloop import PeriodicCallback

from . import fine, prometheus
from .series import RingBuffer
from .tables import Writer

log = logging.getLogger("packlab.telemetry")

NAME = "packlab-telemetry"
#: A queue job's id in the key of the Dask task that runs it (``f-<span word>-packlab-<id>-<attempt>...``).
JOB_KEY = re.compile(r"-packlab-([0-9a-f]{12})-\d+\.\d+-")
_WORKER_METRICS = ("cpu", "memory", "memory_peak", "spilled", "busy_seconds", "idle_seconds", "cpu_seconds")


@functools.lru_cache(maxsize=4096)
def _prefix(key: str) -> str:
    from dask.utils import key_split

    from ..queue.spans import task_name

    return task_name(key_split(key))  # without the span's word


def task_rows(cluster: str, raw: list[tuple]) -> list[tuple]:
    """``tel_tasks`` rows from what the transition hook buffered (run on the writer thread).

    A queue job's key is its task prefix up to ``-packlab``, then its own id and attempt:
    the prefix is worked out once per head (one per function and span), not per key.

    >>> task_rows("c", [("inc-qkzt-packlab-0123456789ab-1.1-x", "w", 1.0, 2.0, "memory"),
    ...                 (("sum-0a1b2c3d", 0), "w", 2.0, 3.0, "erred")])  # doctest: +NORMALIZE_WHITESPACE
    [('c', 'inc-qkzt-packlab-0123456789ab-1.1-x', 'inc-packlab', '0123456789ab', 'w', 1.0, 2.0, 'memory'),
     ('c', "('sum-0a1b2c3d', 0)", 'sum', None, 'w', 2.0, 3.0, 'erred')]
    """
    out = []
    for key, worker, start, stop, outcome in raw:
        k = str(key)
        m = JOB_KEY.search(k)
        head = k if m is None else k[:m.start() + len("-packlab")]
        out.append((cluster, k, _prefix(head), m and m.group(1), worker, start, stop, outcome))
    return out


class TelemetryPlugin(SchedulerPlugin):
    """Collects a cluster's telemetry into a packlab store (see the module's docstring).

    Parameters
    ----------
    store : str
        The SQLite file (made owner-only if missing; see :mod:`packlab.telemetry.tables`).
    cluster : str
        This cluster's id in the store (``tel_clusters.cluster``).
    interval, flush_interval : float
        Seconds between two samples, and between two batches written.
    backend, profile, market : str
        Recorded with the cluster and its workers (``market`` prices them).
    gpus : int
        GPUs per worker (the scheduler does not see them).
    capacity : int
        Task records held between two batches at most (older ones are dropped, counted
        in ``dropped``).
    """

    name = NAME
    idempotent = True

    def __init__(self, store: str, cluster: str, *, interval: float = 1.0, flush_interval: float = 2.0,
                 backend: str = "", profile: str = "", market: str = "on-demand", gpus: int = 0,
                 capacity: int = 1_000_000, pricing: Any = None) -> None:
        self.store, self.cluster = store, cluster
        self.interval, self.flush_interval = interval, flush_interval
        self.backend, self.profile, self.market, self.gpus = backend, profile, market, gpus
        self.capacity = capacity
        self.pricing = pricing  # a packlab.Pricing: the cost rate on /metrics
        self.dropped = 0

    # -- life cycle (on the scheduler's event loop) ---------------------------------------
    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.started = time.time()
        self._tasks: deque = deque(maxlen=self.capacity)
        self._busy: dict[str, float] = {}
        self._counts: dict[str, list[int]] = {}  # worker: [tasks, erred]
        self._workers: dict[str, dict[str, Any]] = {}
        self._series: dict[tuple[str, str], RingBuffer] = {}
        self._cpu_s: dict[str, float] = {}
        self._last: float | None = None
        self._fine: dict[str, dict] = {}  # the fine metrics last handed over, per span
        self.writer = await asyncio.to_thread(self._writer, self.store)
        for addr in scheduler.workers:
            self.add_worker(scheduler, addr)
        self._pc = PeriodicCallback(self.sample, self.interval * 1000)
        self._pc.start()
        self._metrics = prometheus.register(self.metric_families)

    def _writer(self, store: str) -> Writer:
        w = Writer(store, flush_interval=self.flush_interval, converters={
            "tel_tasks": lambda raw: task_rows(self.cluster, raw),
            "tel_fine": lambda raw: fine.rows(self.cluster, time.time(), raw)})
        return w

    def add_worker(self, scheduler: Any, worker: str) -> None:
        ws = scheduler.workers.get(worker)
        if ws is None or worker in self._workers:
            return
        self._workers[worker] = {"start": time.time(), "stop": None, "name": str(ws.name), "host": ws.host,
                                 "threads": ws.nthreads, "memory": ws.memory_limit or 0}
        self._busy.setdefault(worker, 0.0)
        self._counts.setdefault(worker, [0, 0])

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        info = self._workers.get(worker)
        if info is not None and info["stop"] is None:
            info["stop"] = time.time()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start != "processing" or (finish != "memory" and finish != "erred"):
            return
        worker = kwargs.get("worker")
        for ss in kwargs.get("startstops") or ():
            if ss.get("action") == "compute":
                a, b = ss["start"], ss["stop"]
                if len(self._tasks) == self.capacity:
                    self.dropped += 1
                self._tasks.append((key, worker, a, b, finish))
                if worker in self._busy:
                    self._busy[worker] += b - a
                    c = self._counts[worker]
                    c[0] += 1
                    if finish == "erred":
                        c[1] += 1

    # -- sampling ----------------------------------------------------------------------
    def _append(self, source: str, metric: str, t: float, value: float) -> None:
        buf = self._series.get((source, metric))
        if buf is None:  # about two batches of samples: the writer drains it every batch
            buf = self._series[(source, metric)] = RingBuffer(max(4, int(4 * self.flush_interval /
                                                                         self.interval) + 4))
        buf.append(t, value)

    def sample(self) -> None:
        """One sample of every worker and of the cluster, handed to the writer."""
        now = time.time()
        dt = 0.0 if self._last is None else now - self._last
        self._last = now
        threads = busy_threads = processing = 0
        for addr, ws in self.scheduler.workers.items():
            if addr not in self._workers:
                self.add_worker(self.scheduler, addr)
            info = self._workers[addr]
            m = ws.metrics
            cpu = float(m.get("cpu", 0.0)) / 100.0
            mem = float(m.get("memory", 0) or 0)
            spilled = float((m.get("spilled_bytes") or {}).get("disk", 0) or 0)
            self._cpu_s[addr] = self._cpu_s.get(addr, 0.0) + cpu * dt
            held = ws.nthreads * (now - info["start"])
            busy = self._busy.get(addr, 0.0)
            for metric, value in zip(_WORKER_METRICS, (cpu, mem, mem, spilled, busy, max(0.0, held - busy),
                                                        self._cpu_s[addr]), strict=True):
                self._append(addr, metric, now, value)
            gpu = m.get("gpu")  # distributed's NVML metric: {"utilization": %, "memory-used": bytes}
            if isinstance(gpu, dict) and gpu.get("utilization") is not None:
                self._append(addr, "gpu", now, float(gpu["utilization"]) / 100.0)
                if gpu.get("memory-used") is not None:
                    self._append(addr, "gpu_memory", now, float(gpu["memory-used"]))
            n = len(ws.processing)
            threads += ws.nthreads
            busy_threads += min(n, ws.nthreads)
            processing += n
        for metric, value in (("utilisation", busy_threads / threads if threads else 0.0),
                              ("workers", len(self.scheduler.workers)), ("threads", threads),
                              ("tasks_processing", processing)):
            self._append("", metric, now, value)
        self._hand_over(now)

    def _hand_over(self, now: float, stopped: float | None = None) -> None:
        w = self.writer
        w.put("tel_samples", [(t, s, m, v) for (s, m), buf in self._series.items() for t, v in buf.drain()])
        if self._tasks:
            raw = [self._tasks.popleft() for _ in range(len(self._tasks))]
            w.put_raw("tel_tasks", raw)
        changed = fine.take(self.scheduler, self._fine)
        if changed:
            w.put_raw("tel_fine", changed)
        w.put("tel_workers", [(self.cluster, addr, i["name"], i["host"], i["start"], i["stop"] or stopped,
                               now, i["threads"], i["threads"], i["memory"], self.gpus, self.market,
                               self._busy.get(addr, 0.0), *self._counts.get(addr, (0, 0)))
                              for addr, i in self._workers.items()])
        w.put("tel_clusters", [(self.cluster, self.backend, self.profile, self.scheduler.address,
                                self.started, stopped, now, 0, 0)])
        # a worker gone for good is forgotten once written (its row holds its stop)
        for addr in [a for a, i in self._workers.items() if i["stop"] is not None]:
            del self._workers[addr]
            self._busy.pop(addr, None)
            self._counts.pop(addr, None)
            self._cpu_s.pop(addr, None)
            for key in [k for k in self._series if k[0] == addr]:
                del self._series[key]

    def metric_families(self) -> list[prometheus.Family]:
        """packlab's gauges for the scheduler's ``/metrics`` (labelled by cluster)."""
        key = (self.cluster,)
        wss = list(self.scheduler.workers.values())
        threads = sum(ws.nthreads for ws in wss)
        busy = sum(min(len(ws.processing), ws.nthreads) for ws in wss)
        tasks = sum(c[0] for c in self._counts.values())
        erred = sum(c[1] for c in self._counts.values())
        out: list[prometheus.Family] = [
            ("packlab_workers", "Dask workers connected", ("cluster",), {key: len(wss)}),
            ("packlab_utilisation", "fraction of worker threads with a task", ("cluster",),
             {key: busy / threads if threads else 0.0}),
            ("packlab_task_failure_rate", "fraction of tasks that erred (workers connected)", ("cluster",),
             {key: erred / tasks if tasks else 0.0}),
        ]
        if self.pricing is not None:
            rate = sum(self.pricing.hourly(cores=ws.nthreads, memory=ws.memory_limit or 0, gpus=self.gpus,
                                           market=self.market) for ws in wss)
            out.append(("packlab_cost_rate", "what the workers held cost per hour", ("cluster", "currency"),
                        {(self.cluster, self.pricing.currency): rate}))
        return out

    # -- requests from the client (client.run_on_scheduler) -----------------------------
    async def flush(self) -> str:
        """Sample now and wait until everything collected is written; the store's path."""
        self.sample()
        await asyncio.to_thread(self.writer.flush)
        return self.writer.path

    async def retarget(self, store: str) -> str:
        """Write to ``store`` from now on (a queue's store); the old file keeps what it has."""
        new = await asyncio.to_thread(self._writer, store)
        if new.path == self.writer.path:
            await asyncio.to_thread(new.close)
            return self.writer.path
        self.sample()
        old, self.writer = self.writer, new
        self._fine = {}  # the new store gets every span's totals
        await asyncio.to_thread(old.close)
        return new.path

    async def before_close(self) -> None:
        await self.stop()

    async def close(self) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop sampling, mark the cluster and its workers stopped, write everything."""
        if getattr(self, "_pc", None) is None:
            return
        self._pc.stop()
        self._pc = None
        prometheus.unregister(self._metrics)
        now = time.time()
        self.sample()
        self._hand_over(now, stopped=now)
        await asyncio.to_thread(self.writer.close)


async def _flush(dask_scheduler: Any) -> str | None:
    plugin = dask_scheduler.plugins.get(NAME)
    return None if plugin is None or getattr(plugin, "_pc", None) is None else await plugin.flush()


async def _retarget(dask_scheduler: Any, store: str) -> str | None:
    plugin = dask_scheduler.plugins.get(NAME)
    return None if plugin is None or getattr(plugin, "_pc", None) is None else await plugin.retarget(store)


def flush(client: Any) -> str | None:
    """Ask the cluster's plugin to write what it holds; the store's path (``None``: no plugin)."""
    return client.run_on_scheduler(_flush)


def retarget(client: Any, store: str) -> str | None:
    """Ask the cluster's plugin to write to ``store`` from now on (``None``: no plugin)."""
    return client.run_on_scheduler(_retarget, store=store)


__all__ = ["JOB_KEY", "NAME", "TelemetryPlugin", "flush", "retarget", "task_rows"]
