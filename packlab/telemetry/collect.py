"""Turning collection on: the plugin ``packlab.launch`` installs, and a queue's recorder.

:func:`install` registers the :class:`~.plugin.TelemetryPlugin` on a new cluster's
scheduler, writing to ``launch(store=)``, else ``packlab.telemetry.store``, else a
private temporary file removed when the cluster closes. :func:`attach_queue` runs when
a :class:`packlab.JobQueue` opens on a packlab cluster: the cluster's telemetry moves to
the queue's store (one file holds the jobs and their telemetry) and a
:class:`QueueRecorder` records the queue's events and its depth per priority class and
owner, from the queue's ``subscribe`` hook (never by polling the store).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from typing import Any

from .. import checks, config
from ..clusters.base import get_backend
from ..queue.states import NOT_WAITING_KINDS, WAITING_KINDS
from ..store import identify, store_path
from . import plugin as _plugin
from . import prometheus
from .pricing import Pricing
from .tables import Writer

log = logging.getLogger("packlab.telemetry")



def check_store(store: object, field: str = "store") -> str:
    """A store path for telemetry, checked before anything starts: a packlab store or a new
    file in an existing folder (the file itself is not made yet)."""
    path = store_path(checks.path(store, field))
    identify(store, path)  # refuses another application's file, a symlink, garbage (read through SQLite)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        from ..errors import PacklabError

        raise PacklabError(f"{field}={os.fspath(store)!r}: the folder {folder} does not exist. Pass a path "
                           "in a folder you can write, e.g. store='~/packlab.db'.", field=field, value=store)
    return path


class ClusterTelemetry:
    """What :func:`install` returns (``pc.telemetry``): where the cluster's telemetry goes.

    ``store`` is the file written now (it changes to a queue's store when one opens);
    ``temporary`` says it is removed when the cluster closes.
    """

    def __init__(self, client: Any, cluster_id: str, store: str, temporary: bool) -> None:
        self.client, self.cluster_id, self.store, self.temporary = client, cluster_id, store, temporary
        self.queues: list[QueueRecorder] = []
        self.sinks: list[Any] = []
        self.jobs: Any = None  # an .accounting.JobsRecorder where workers are batch jobs
        self.closed = False

    def flush(self) -> str:
        """Wait until what the scheduler collected is in the store; the store's path."""
        with contextlib.suppress(Exception):
            path = _plugin.flush(self.client)
            if path:
                self.store = path
        for q in self.queues:
            q.flush()
        return self.store

    def close(self) -> None:
        """Write everything the scheduler holds (before the cluster closes)."""
        self.closed = True
        if self.jobs is not None:
            self.jobs.remember()
        for q in self.queues:
            q.close()
        with contextlib.suppress(Exception):
            self.client.run_on_scheduler(_stop)

    def after_close(self) -> None:
        """Once the cluster closed: the worker jobs' final billing; remove a
        temporary store."""
        if self.jobs is not None:
            self.jobs.close(store=self.store)
        if self.temporary:
            shutil.rmtree(os.path.dirname(self.store), ignore_errors=True)


async def _stop(dask_scheduler: Any) -> None:
    p = dask_scheduler.plugins.get(_plugin.NAME)
    if p is not None:
        await p.stop()


def _intervals() -> tuple[float, float]:
    """``packlab.telemetry.interval`` and ``flush-interval``, in seconds."""
    return tuple(checks.duration(config.get(f"telemetry.{k}"), f"packlab.telemetry.{k}", allow_zero=False)
                 for k in ("interval", "flush-interval"))  # type: ignore[return-value]


def install(pc: Any, store: str | None = None, *, market: str = "on-demand") -> ClusterTelemetry:
    """Register the telemetry plugin on ``pc``'s scheduler (see the module's docstring)."""
    if store is None:
        store = config.get("telemetry.store")
    temporary = store is None
    if temporary:
        folder = tempfile.mkdtemp(prefix="packlab-telemetry-")  # 0700
        path = os.path.join(folder, "telemetry.db")
    else:
        path = check_store(store, "store" if store is not None else "packlab.telemetry.store")
    cid = uuid.uuid4().hex[:12]
    interval, every = _intervals()
    pc.client.register_plugin(_plugin.TelemetryPlugin(
        path, cid, interval=interval, flush_interval=every, backend=pc.backend, profile=pc.profile.name,
        market=market, gpus=pc.profile.gpus, pricing=Pricing.from_config()))
    tel = ClusterTelemetry(pc.client, cid, path, temporary)
    accounting = get_backend(pc.backend).accounting()  # the batch scheduler's view of worker jobs
    if accounting is not None:
        from .accounting import JobsRecorder

        tel.jobs = JobsRecorder(pc.cluster, accounting, cid, path, every=max(5.0, 10 * interval))
    return tel


def telemetry_of(obj: Any) -> ClusterTelemetry | None:
    """The :class:`ClusterTelemetry` of a PackCluster (or of the cluster of a client made
    from one), or ``None``."""
    return getattr(obj, "telemetry", None)


class QueueRecorder:
    """A queue's depth, all and per priority class and owner, sampled into its store.

    The events themselves are in the store already (the queue's ``events`` table, which
    the monitor reads): this only follows them through the ``subscribe`` hook. The
    callback keeps counts up to date (O(1) an event); a thread samples them every
    ``interval`` and the :class:`~.tables.Writer` writes in batches. The depth is the jobs
    whose last event left them waiting (submitted, retrying, held, ... and not yet handed
    to Dask), counted per job: not the ``queued`` an event carries, which is the depth as
    the emitting thread saw it and may be overtaken (a job entering the queue emits
    nothing, so the last event's figure can stay stale while no job moves). A class that
    empties is sampled once at 0, then left out until it has jobs again.
    """

    #: The queue tags its hand-overs with Dask spans while a recorder is attached (they are
    #: what the per-function CPU figures are read from).
    wants_spans = True

    def __init__(self, queue: Any, *, interval: float = 1.0, flush_interval: float = 2.0) -> None:
        self.writer = Writer(queue.store, flush_interval=flush_interval)
        self.interval = interval
        self._client = queue.client
        self._waiting: dict[str, tuple[str, str]] = {}  # job id -> its classes
        self._by: dict[str, int] = {}  # class -> jobs waiting (no entry: none)
        self._sampled: set[str] = set()  # the classes of the last sample
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sub = queue.subscribe(self._on_event, kinds=WAITING_KINDS | NOT_WAITING_KINDS)
        self._metrics = prometheus.register(self.metric_families)
        self._thread = threading.Thread(target=self._loop, name="packlab-telemetry-queue", daemon=True)
        self._thread.start()

    def _count(self, classes: tuple[str, str], step: int) -> None:
        by = self._by
        for c in classes:
            if c:
                n = by.get(c, 0) + step
                if n:
                    by[c] = n
                else:
                    del by[c]

    def _on_event(self, ev: Any) -> None:
        with self._lock:
            if ev.kind in WAITING_KINDS:
                if ev.job_id not in self._waiting:
                    classes = (f"priority:{ev.priority}", f"owner:{ev.owner}" if ev.owner else "")
                    self._waiting[ev.job_id] = classes
                    self._count(classes, 1)
            else:
                classes = self._waiting.pop(ev.job_id, None)
                if classes is not None:
                    self._count(classes, -1)

    def _depths(self) -> tuple[int, dict[str, int]]:
        return len(self._waiting), dict(self._by)

    def metric_families(self) -> list[prometheus.Family]:
        """Queue depth, all and per class, for the scheduler's ``/metrics``."""
        with self._lock:
            queued, by = self._depths()
        store = self.writer.path
        values = {(store, "all"): float(queued), **{(store, k): float(v) for k, v in by.items()}}
        return [("packlab_queue_depth", "queue jobs waiting, all and by priority class and owner",
                 ("store", "class"), values)]

    def sample(self) -> None:
        now = time.time()
        with self._lock:
            queued, by = self._depths()
            emptied, self._sampled = self._sampled - by.keys(), set(by)
        by.update(dict.fromkeys(emptied, 0))
        self.writer.put("tel_samples", [(now, "", "queue_depth", float(queued)),
                                        *((now, k, "queue_depth", float(v)) for k, v in sorted(by.items()))])

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def flush(self) -> None:
        self.sample()
        self.writer.flush()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._sub()
        prometheus.unregister(self._metrics)
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()
        self.writer.close()
        # The cluster's own telemetry of the run too, so the store holds it once the queue
        # is closed (a report or dashboard opened right after sees the run).
        with contextlib.suppress(Exception):
            _plugin.flush(self._client)


class ClusterHook:
    """Telemetry's part in ``launch()`` (see :mod:`packlab.hooks`): ``store=`` checked before
    anything starts, the scheduler plugin installed once the client is connected."""

    def check(self, options: dict[str, Any]) -> None:
        if options.get("store") is not None:
            check_store(options["store"])

    def launched(self, pc: Any, options: dict[str, Any]) -> None:
        if options.get("telemetry"):
            market = "spot" if options.get("spot") else "on-demand"
            pc.telemetry = install(pc, options.get("store"), market=market)
            pc.attach(pc.telemetry)


class QueueHook:
    """Telemetry's part in a queue's opening: :func:`attach_queue`."""

    def opened(self, queue: Any, cluster_or_client: Any) -> QueueRecorder | None:
        return attach_queue(queue, cluster_or_client)


#: Registered as ``telemetry`` in :data:`packlab.hooks.CLUSTER_HOOKS` and ``QUEUE_HOOKS``.
CLUSTER_HOOK, QUEUE_HOOK = ClusterHook(), QueueHook()


def attach_queue(queue: Any, cluster_or_client: Any) -> QueueRecorder | None:
    """Record ``queue``'s telemetry in its store when it runs on a cluster with the
    telemetry plugin (the cluster's telemetry follows it there). Never raises: telemetry
    must not stop a queue from opening (a failure is logged)."""
    try:
        if not config.get("telemetry.enabled"):
            return None
        tel = telemetry_of(cluster_or_client)
        if tel is None:  # a client (or a Dask cluster): record only if its scheduler has the plugin
            if not _plugin.retarget(queue.client, queue.store):
                return None
            interval, every = _intervals()
            return QueueRecorder(queue, interval=interval, flush_interval=every)
        interval, every = _intervals()
        rec = QueueRecorder(queue, interval=interval, flush_interval=every)
        old = tel.store
        path = _plugin.retarget(queue.client, queue.store)
        if path:
            tel.store = path
            if tel.jobs is not None:
                tel.jobs.store = path
            if tel.temporary and os.path.abspath(old) != os.path.abspath(path):
                tel.temporary = False
                shutil.rmtree(os.path.dirname(old), ignore_errors=True)
        tel.queues.append(rec)
        return rec
    except Exception:
        log.warning("packlab telemetry: not recording the queue on %s", queue.store, exc_info=True)
        return None


__all__ = ["CLUSTER_HOOK", "QUEUE_HOOK", "ClusterTelemetry", "QueueRecorder",
           "attach_queue", "check_store", "install", "telemetry_of"]
