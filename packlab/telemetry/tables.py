"""Telemetry's tables in a packlab store, and the writer thread that fills them.

Telemetry lives in the same SQLite file as a :class:`packlab.JobQueue`'s jobs when a
queue runs on the cluster (one file holds the jobs and their telemetry), else in the
file named by ``launch(store=)`` or ``packlab.telemetry.store``. The file is created
owner-only and recognised exactly as the queue's store is (:mod:`packlab.store`);
telemetry's tables are its own :data:`TELEMETRY` schema, added beside the queue's.

Writing never blocks or slows the queue: a :class:`Writer` has its own connection and
thread, commits a batch every ``flush_interval`` in one short transaction, and waits at
most :data:`BUSY_MS` for the write lock: when the queue holds it, the batch stays in
memory and goes with the next one (bounded; the oldest rows are dropped and counted).
Old samples are downsampled by age (:func:`packlab.telemetry.series.downsample`: 1 s for
an hour, 1 min for a week, 1 h beyond), so the file stays bounded.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from ..errors import PacklabError, StoreError
from ..queue.schema import QUEUE
from ..store import Schema, failures, migrate, open_store, register, transaction
from .series import history_tiers

log = logging.getLogger("packlab.telemetry")

DDL = """
CREATE TABLE IF NOT EXISTS tel_clusters (
  cluster TEXT PRIMARY KEY, backend TEXT, profile TEXT, scheduler TEXT, started REAL, stopped REAL,
  seen REAL, alert_sinks INTEGER DEFAULT 0, queues INTEGER DEFAULT 0);
CREATE TABLE IF NOT EXISTS tel_workers (
  cluster TEXT, worker TEXT, name TEXT, host TEXT, start REAL, stop REAL, seen REAL, cores INTEGER,
  threads INTEGER, memory INTEGER, gpus INTEGER DEFAULT 0, market TEXT DEFAULT 'on-demand',
  busy REAL DEFAULT 0, tasks INTEGER DEFAULT 0, erred INTEGER DEFAULT 0, PRIMARY KEY (cluster, worker));
CREATE TABLE IF NOT EXISTS tel_tasks (
  cluster TEXT, key TEXT, prefix TEXT, job TEXT, worker TEXT, start REAL, stop REAL, outcome TEXT);
CREATE INDEX IF NOT EXISTS tel_tasks_stop ON tel_tasks(stop);
CREATE INDEX IF NOT EXISTS tel_tasks_job ON tel_tasks(job);
CREATE TABLE IF NOT EXISTS tel_samples (t REAL NOT NULL, source TEXT NOT NULL, metric TEXT NOT NULL,
  value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS tel_samples_metric ON tel_samples(metric, t);
CREATE TABLE IF NOT EXISTS tel_slurm (
  cluster TEXT, job_id TEXT, worker TEXT, partition TEXT, state TEXT, billing REAL, submitted REAL,
  elapsed REAL, seen REAL, PRIMARY KEY (cluster, job_id));
CREATE TABLE IF NOT EXISTS tel_meta (key TEXT PRIMARY KEY, value REAL);
CREATE TABLE IF NOT EXISTS tel_fine (
  cluster TEXT, span TEXT, owner TEXT, fn TEXT, prefix TEXT, activity TEXT, unit TEXT, value REAL, seen REAL,
  PRIMARY KEY (cluster, span, prefix, activity, unit));
"""
TABLES = ("tel_clusters", "tel_workers", "tel_tasks", "tel_samples", "tel_slurm", "tel_meta", "tel_fine")
# A queue's job events are its own ``events`` table (and ``jobs``), read where telemetry
# needs them; a store written before that also holds a ``tel_events`` copy, now unused.

#: How long a telemetry write waits for the write lock before it leaves its batch for later.
BUSY_MS = 200

METRICS: dict[str, tuple[str, str, str]] = {
    # name: (kind for downsampling, unit, what one row means). source "" is the whole cluster.
    "cpu": ("gauge", "cores", "cores in use by the worker process (the heartbeat's cpu / 100)"),
    "memory": ("gauge", "bytes", "worker process memory (the heartbeat's RSS)"),
    "memory_peak": ("peak", "bytes", "highest worker memory seen in the sample's interval"),
    "spilled": ("counter", "bytes", "bytes the worker has spilled to disk so far"),
    "busy_seconds": ("counter", "thread-seconds", "task thread-seconds the worker has run so far"),
    "idle_seconds": ("counter", "thread-seconds", "thread-seconds held without a task so far"),
    "cpu_seconds": ("counter", "core-seconds", "CPU time the worker has used so far"),
    "gpu": ("gauge", "fraction", "GPU utilisation of the worker's GPU (Dask's NVML heartbeat metric, "
                                 "where pynvml is installed on the worker)"),
    "gpu_memory": ("gauge", "bytes", "GPU memory in use on the worker's GPU (Dask's NVML heartbeat metric)"),
    "utilisation": ("gauge", "fraction", "fraction of the cluster's worker threads busy"),
    "workers": ("gauge", "workers", "workers connected"),
    "threads": ("gauge", "threads", "worker threads connected"),
    "tasks_processing": ("gauge", "tasks", "tasks on workers (running or waiting there)"),
    "queue_depth": ("gauge", "jobs", "queue jobs waiting: all (source ''), 'priority:P' or 'owner:O'"),
}
"""The sampled series in ``tel_samples``, their kind (:data:`~.series.METRIC_KINDS`) and unit."""


#: Telemetry's part of a store (its tables beside the queue's).
TELEMETRY = register(Schema(name="telemetry", ddl=DDL, objects=frozenset(TABLES)))


def create_tables(con: sqlite3.Connection) -> None:
    """Add telemetry's tables to a packlab store (and the queue's, for a new file: both
    parts in each, so ``packlab queue`` and ``packlab report`` both recognise the file)."""
    migrate(con, QUEUE, TELEMETRY)


def _open(where: str | os.PathLike, mode: str) -> tuple[str, sqlite3.Connection]:
    """A connection to a store, created with the queue's and telemetry's tables when new."""
    path, con, _ = open_store(where, mode, (QUEUE, TELEMETRY) if mode != "ro" else (),
                                    writer="telemetry")
    return path, con


def open_for_writing(store: str | os.PathLike) -> tuple[str, sqlite3.Connection]:
    """A store's path and a new connection to it for telemetry: created owner-only (0600)
    when missing, refused (unchanged) when it is not a packlab store."""
    path, con = _open(store, "rwc")
    try:
        create_tables(con)
    except sqlite3.DatabaseError as e:
        con.close()
        raise StoreError(f"store {path}: cannot add telemetry's tables ({e})") from None
    con.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
    return path, con


def open_for_reading(store: str | os.PathLike) -> tuple[str, sqlite3.Connection]:
    """A read-only connection to a store that holds telemetry; a PacklabError naming
    ``store`` (the CLI's ``--store``) when there is none, or no telemetry in it."""
    path, con = _open(store, "ro")
    have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "tel_clusters" not in have or con.execute("SELECT COUNT(*) FROM tel_clusters").fetchone()[0] == 0:
        con.close()
        raise PacklabError(
            f"store={os.fspath(store)!r} ({os.path.abspath(path)}) holds no telemetry: no cluster has "
            "written to it. Launch with packlab.launch(store=...) (or run a JobQueue with this store on a "
            "packlab cluster), then read it.", field="store", value=store)
    return path, con


_INSERT = {
    "tel_tasks": "INSERT INTO tel_tasks VALUES (?,?,?,?,?,?,?,?)",
    "tel_samples": "INSERT INTO tel_samples VALUES (?,?,?,?)",
    "tel_workers": ("INSERT INTO tel_workers VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (cluster, worker) DO UPDATE SET stop=excluded.stop, seen=excluded.seen, "
                    "busy=excluded.busy, "
                    "tasks=excluded.tasks, erred=excluded.erred"),
    "tel_clusters": ("INSERT INTO tel_clusters VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (cluster) DO UPDATE "
                     "SET stopped=excluded.stopped, seen=excluded.seen, "
                     "alert_sinks=MAX(alert_sinks, excluded.alert_sinks), "
                     "queues=MAX(queues, excluded.queues)"),
    # Dask's fine performance metrics per span: running totals (see .fine)
    "tel_fine": ("INSERT INTO tel_fine VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (cluster, span, prefix, "
                 "activity, unit) DO UPDATE SET value=excluded.value, seen=excluded.seen"),
    "tel_slurm": ("INSERT INTO tel_slurm VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (cluster, job_id) DO UPDATE "
                  "SET state=excluded.state, billing=COALESCE(excluded.billing, billing), "
                  "submitted=COALESCE(excluded.submitted, submitted), elapsed=excluded.elapsed, "
                  "seen=excluded.seen, "
                  "worker=COALESCE(excluded.worker, worker)"),
}
"""How rows of each table are written (upserts for the tables that describe things)."""


class Writer:
    """Batches of telemetry rows written to a store by a thread of their own.

    :meth:`put` only appends to a bounded buffer (safe from any thread, including the
    scheduler's event loop); the thread commits everything buffered every
    ``flush_interval`` seconds in one transaction, and downsamples the samples older
    than the finest tier every ``downsample_every`` seconds. A batch the store refused
    (the queue held the lock, the disk is full) is kept and tried again, never raised:
    telemetry must not stop the workload. ``refused`` counts such batches, ``dropped`` the
    rows that did not fit in ``capacity``; ``error`` holds the last failure (``None``
    once a batch went in again). A failure of the store itself (full, read-only: see
    :mod:`packlab.store.failures`) is logged once, as a warning, until writes succeed.

    Examples
    --------
    >>> import tempfile
    >>> w = Writer(os.path.join(tempfile.mkdtemp(), "t.db"), flush_interval=0.05)
    >>> w.put("tel_samples", [(0.0, "", "workers", 1.0)]); w.flush()
    >>> w.close(); w.rows_written
    1
    """

    def __init__(self, store: str | os.PathLike, *, flush_interval: float = 1.0, capacity: int = 1_000_000,
                 downsample_every: float = 300.0,
                 converters: dict[str, Callable[[list], list[tuple]]] | None = None) -> None:
        self.path, self._con = open_for_writing(store)
        self._converters = dict(converters or {})
        self._raw: deque[tuple[str, list]] = deque()
        self.flush_interval = flush_interval
        self.downsample_every = downsample_every
        self._buf: dict[str, deque] = {t: deque(maxlen=capacity) for t in _INSERT}
        self._wake = threading.Condition()
        self._flushes = 0
        self._done = 0
        self._closed = False
        self.dropped = 0
        self.refused = 0
        self.rows_written = 0
        self.error: BaseException | None = None
        self._last_downsample = time.time()
        self._thread = threading.Thread(target=self._loop, name="packlab-telemetry-writer", daemon=True)
        self._thread.start()

    def put(self, table: str, rows: Iterable[tuple]) -> None:
        """Buffer ``rows`` for ``table`` (never blocks, never raises for a full buffer)."""
        buf = self._buf[table]
        for row in rows:
            if len(buf) == buf.maxlen:
                self.dropped += 1
            buf.append(row)

    def put_raw(self, table: str, raw: list) -> None:
        """Buffer ``raw`` items that the writer's thread turns into ``table`` rows with the
        converter given for it (so the caller, e.g. the event loop, does not)."""
        self._raw.append((table, raw))

    def flush(self, timeout: float = 30.0) -> None:
        """Block until everything put so far was tried once (written, or kept after an error)."""
        with self._wake:
            self._flushes += 1
            want = self._flushes
            self._wake.notify_all()
            self._wake.wait_for(lambda: self._done >= want or self._closed, timeout)

    def downsample_now(self, now: float | None = None) -> int:
        """Downsample now (on the caller's thread); the rows removed."""
        return downsample_store(self._con, time.time() if now is None else now)

    def _loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._flushes > self._done or self._closed, self.flush_interval)
                want, closing = self._flushes, self._closed
            self._commit()
            if time.time() - self._last_downsample >= self.downsample_every:
                self._last_downsample = time.time()
                with contextlib.suppress(sqlite3.Error):
                    downsample_store(self._con, self._last_downsample)
            with self._wake:
                self._done = max(self._done, want)
                self._wake.notify_all()
            if closing:
                return

    def _commit(self) -> None:
        while self._raw:
            table, raw = self._raw.popleft()
            try:
                self.put(table, self._converters[table](raw))
            except Exception:  # a record we cannot read must not stop the others
                log.exception("packlab telemetry: %d %s records could not be converted", len(raw), table)
        batch = {t: [b.popleft() for _ in range(len(b))] for t, b in self._buf.items() if b}
        if not batch:
            return
        try:
            with transaction(self._con):
                for table, rows in batch.items():
                    self._con.executemany(_INSERT[table], rows)
        except sqlite3.Error as e:  # the lock stayed with the queue, or the disk is full: later
            first, self.error = self.error is None, e
            self.refused += 1
            for table, rows in batch.items():
                self._buf[table].extendleft(reversed(rows))
            kind = failures.kind(self.path, e) if first else failures.LOCKED
            if kind != failures.LOCKED:  # not a busy queue: say it once, as the queue does
                log.warning("packlab telemetry: store %s refused a batch (%s); kept in memory (up to %d "
                            "rows a table) and written once it takes writes again",
                            self.path, failures.describe(self.path, e), self._buf["tel_samples"].maxlen)
            else:
                log.debug("packlab telemetry: batch kept for later: %s", e)
            return
        self.error = None
        self.rows_written += sum(map(len, batch.values()))

    def close(self) -> None:
        """Write what is buffered and close the connection."""
        if self._closed:
            return
        self.flush()
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        self._thread.join(timeout=30)
        self._commit()  # what came after the last round
        self._con.close()


def _kinds() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"gauge": [], "peak": [], "counter": []}
    for name, (kind, _, _) in METRICS.items():
        out[kind].append(name)
    return out


def downsample_store(con: sqlite3.Connection, now: float) -> int:
    """Merge the samples of ``tel_samples`` by age (``packlab.telemetry.history``), each
    metric by its kind (mean of a gauge, highest peak, last value of a counter); returns
    the rows removed.

    It does in SQL what :func:`~packlab.telemetry.series.downsample` defines (tested
    equal): a row moves to a coarser tier once the whole bucket around it is older than
    the tier's starting age, i.e. ``t < floor((now - age) / res) * res``; buckets are
    aligned on multiples of their resolution and nest. Only the stretch that aged into
    each tier since the last run is read again. A bucket already merged is merged again
    as one row (the mean of minute means makes the hour's mean).
    """
    tiers = history_tiers()
    last = con.execute("SELECT value FROM tel_meta WHERE key='downsampled'").fetchone()
    prev = last[0] if last else None
    before = con.execute("SELECT COUNT(*) FROM tel_samples").fetchone()[0]
    kinds = _kinds()
    others = ",".join("?" * (len(kinds["peak"]) + len(kinds["counter"])))
    peaks, counters = ",".join("?" * len(kinds["peak"])), ",".join("?" * len(kinds["counter"]))
    with transaction(con):
        con.execute("CREATE TEMP TABLE IF NOT EXISTS tel_ds (t REAL, source TEXT, metric TEXT, value REAL)")
        for (age, _), (_, res) in itertools.pairwise(tiers):
            cutoff = math.floor((now - age) / res) * res
            lo = -math.inf if prev is None else math.floor((prev - age) / res - 1) * res
            if cutoff <= lo:
                continue
            span = (lo, cutoff)
            bucket = f"CAST(t / {res!r} AS INTEGER) * {res!r}"
            con.execute("DELETE FROM tel_ds")
            con.execute(f"INSERT INTO tel_ds SELECT {bucket} AS b, source, metric, AVG(value) FROM "
                        f"tel_samples WHERE t >= ? AND t < ? AND metric NOT IN ({others}) "
                        "GROUP BY b, source, metric",
                        (*span, *kinds["peak"], *kinds["counter"]))
            con.execute(f"INSERT INTO tel_ds SELECT {bucket} AS b, source, metric, MAX(value) FROM "
                        f"tel_samples WHERE t >= ? AND t < ? AND metric IN ({peaks}) "
                        "GROUP BY b, source, metric",
                        (*span, *kinds["peak"]))
            # a bare column beside MAX() comes from the row holding the maximum (SQLite)
            con.execute(f"INSERT INTO tel_ds SELECT b, source, metric, value FROM (SELECT {bucket} AS b, "
                        f"source, metric, value, MAX(t) FROM tel_samples WHERE t >= ? AND t < ? "
                        "AND metric IN "
                        f"({counters}) GROUP BY b, source, metric)", (*span, *kinds["counter"]))
            con.execute("DELETE FROM tel_samples WHERE t >= ? AND t < ?", span)
            con.execute("INSERT INTO tel_samples SELECT t, source, metric, value FROM tel_ds")
        con.execute("DELETE FROM tel_ds")
        con.execute("INSERT INTO tel_meta VALUES ('downsampled', ?) ON CONFLICT (key) DO UPDATE "
                    "SET value=excluded.value", (now,))
    return before - con.execute("SELECT COUNT(*) FROM tel_samples").fetchone()[0]


__all__ = ["DDL", "METRICS", "Writer", "create_tables", "downsample_store", "open_for_reading",
           "open_for_writing"]
