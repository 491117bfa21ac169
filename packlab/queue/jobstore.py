"""The queue's store: an embedded SQLite database in WAL mode.

Job records, their payloads (function and arguments, cloudpickled), results and
events live here, so a dead driver loses nothing. Writes go through one writer thread (:mod:`.writer`)
that commits whatever has piled up in a single transaction (every write transaction
checks the driver lease): under load that batches thousands of rows per commit, and the
updates of one job within a batch become one row update. Between two commits under load
the writer pauses a few times as long as the commit took, so the write lock is free most
of the time and another process (``packlab queue requeue``) gets it within milliseconds;
when idle a write lands at once. Readers (the CLI, another process) use their own
connections; WAL lets them read while the queue writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle

from .. import config
from ..errors import LeaseError, PacklabError
from ..store import failures, missing_columns, open_store, remove_store, transaction
from .job import Job, Signal, check_cancellable, check_requeueable, encode_tags
from .schema import QUEUE
from .states import CANCELLED, DEAD, FAILED, QUEUED, RETRYING, STATUSES, UNFINISHED, Kind
from .writer import EVENT_SQL, WriteBehind

_CHUNK = 500  # ids bound per query: far below SQLite's limit on variables
_COLUMNS = ("id, seq, key, fn, owner, priority, deadline, timeout, resources, retry, status, attempts,"
            " submitted, late, error, traceback, payload, result, has_result, next_attempt, tags")
#: Run inside a store's write transaction: a row means this driver still holds the lease.
HELD = "SELECT 1 FROM lease WHERE driver=?"
log = logging.getLogger("packlab.queue")


class Store(WriteBehind):
    """A job store. ``Store(path)`` alone (no queue) serves the CLI; ``mode="ro"``
    (or ``"rw"``) opens an existing store only.

    Examples
    --------
    >>> import tempfile, os
    >>> s = Store(os.path.join(tempfile.mkdtemp(), "q.db"))
    >>> s.counts()
    {}
    >>> s.close()
    """

    def __init__(self, store: str | os.PathLike, mode: str = "rwc") -> None:
        self.path, self._con, self.created = open_store(store, mode, (QUEUE,))
        if mode != "ro":  # see packlab.queue.synchronous: a commit is on the disk, not in its cache
            self._con.execute(f"PRAGMA synchronous={config.get('queue.synchronous').upper()}")
        missing = {name for _, name, _ in missing_columns(self._con, QUEUE)}  # a read-only opener's
        self._columns = ", ".join(f"NULL AS {c}" if c in missing else c for c in _COLUMNS.split(", "))
        self._ops: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        #: What stopped the store: a :class:`StoreError` (the disk full or read-only, a
        #: broken file: see :mod:`packlab.store.failures`) or the :class:`LeaseError` of a lost lease.
        #: Nothing more is written once it is set; ``submit`` and ``wait`` raise it.
        self.error: BaseException | None = None
        #: When (epoch s) a write was refused by the store itself, set at once, before
        #: ``error`` says why (that takes a probe of its folder): from then on nothing is
        #: written or handed to Dask.
        self.failed: float | None = None
        #: Called once, on the writer's thread, with the StoreError (the queue stops).
        self.on_failed: Callable[[BaseException], None] | None = None
        self._rejected: list[str] = []  # rows that failed since the last flush()
        #: The driver lease (see lease.py) every write transaction checks, once a queue
        #: holds one: a driver that lost its lease cannot overwrite the new driver's rows.
        self.fence: Any = None
        #: Commits so far (the benchmark reports them per dispatched job).
        self.commits = 0

    @contextlib.contextmanager
    def _write(self):
        """A write transaction that checks the lease; a lost lease fails the store.
        Always ``BEGIN IMMEDIATE``: a deferred one that reads first cannot wait for the
        write lock (SQLite answers "database is locked" at once, to avoid a deadlock)."""
        with transaction(self._con):
            if self.fence is not None and not self._con.execute(HELD, (self.fence.driver,)).fetchall():
                raise self._lost()
            yield self._con

    def _lost(self) -> LeaseError:
        """A write transaction found another driver's lease: fail the store."""
        self.error = self.fence.lost_error()
        self.fence.mark_lost()
        return self.error

    def _fail(self, e: BaseException) -> None:
        """The store itself refused a write (not the row: see :mod:`packlab.store.failures`): record
        why, write nothing more, and tell the queue (once)."""
        with self._lock:
            if self.failed is not None or self.error is not None:
                return
            self.failed = time.time()
        self.error = failures.store_failure(self.path, e)
        log.error("%s", self.error)
        if self.on_failed is not None:
            self.on_failed(self.error)

    def close(self) -> None:
        if self._writer is not None:
            self._ops.put(None)
            self._writer.join()
            self._writer = None
        self._con.close()

    def discard(self) -> None:
        """Close; and delete the file if this Store created it (a constructor failed)."""
        self.close()
        if self.created:
            remove_store(self.path)

    # -- job records ---------------------------------------------------------------------
    def insert(self, job: Job, then: Callable[[], None] | None = None,
               failed: Callable[[BaseException], None] | None = None) -> None:
        """Queue the job's record; ``then`` runs once it committed, ``failed(error)`` if
        it was refused (its idempotency key already exists: another process won)."""
        retry = None if job.retry is None else cloudpickle.dumps(job.retry)
        res = None if job.resources is None else json.dumps(job.resources)
        self._put(("I", None, (job.id, job.seq, job.key, job.fn_name, job.owner, job.rank, job.deadline,
                               job.timeout, res, retry, job.status, job.attempts, job.submitted,
                               time.time(), job._payload, encode_tags(job.tags)), then, failed))

    def update(self, job: Job, **extra: Any) -> None:
        """Write the job's status, attempts and flags (and any extra columns)."""
        self._put(("U", job.id, {"status": job.status, "attempts": job.attempts, "late": int(job.late),
                                 "updated": time.time(), **extra}, None, None))

    def event(self, job_id: str, t: float, kind: str, detail: str) -> None:
        self._put(("E", None, (job_id, t, kind, detail), None, None))

    # -- reading -------------------------------------------------------------------------
    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._con.execute(sql, params).fetchall()

    def next_seq(self) -> int:
        (n,) = self._query("SELECT COALESCE(MAX(seq), -1) + 1 FROM jobs")[0]
        return n

    def counts(self) -> dict[str, int]:
        """Jobs per status."""
        return dict(self._query("SELECT status, COUNT(*) FROM jobs GROUP BY status"))

    def find_key(self, key: str) -> str | None:
        rows = self._query("SELECT id FROM jobs WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def exists(self, job_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM jobs WHERE id=?", (job_id,)))

    def load(self, job_ids: Iterable[str] | None = None, status: Iterable[str] | None = None,
             cv: Signal | None = None, limit: int | None = None) -> list[Job]:
        """Jobs from the database (with their events), by id or by status, in
        submission order. Any number of ids: they are looked up in chunks."""
        if job_ids is None:
            return self._load([], [], status, cv, limit)
        ids = list(job_ids)
        jobs = [j for i in range(0, len(ids), _CHUNK)
                for j in self._load([f"id IN ({','.join('?' * len(ids[i:i + _CHUNK]))})"],
                                    ids[i:i + _CHUNK], status, cv, None)]
        jobs.sort(key=lambda j: j.seq)
        return jobs[:limit] if limit else jobs

    def _load(self, where: list[str], params: list, status: Iterable[str] | None, cv: Signal | None,
              limit: int | None) -> list[Job]:
        if status is not None:
            st = list(status)
            bad = [s for s in st if s not in STATUSES]
            if bad:
                raise PacklabError(f"status={bad[0]!r} is unknown: choose one of {list(STATUSES)}.")
            where = [*where, f"status IN ({','.join('?' * len(st))})"]
            params = [*params, *st]
        sel = "FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
        sel += " ORDER BY seq" + (f" LIMIT {int(limit)}" if limit else "")
        jobs = [self._job(row, cv) for row in self._query(f"SELECT {self._columns} {sel}", tuple(params))]
        if jobs:  # the events of the same jobs: a subquery, not one bound id per job
            by_id = {j.id: j for j in jobs}
            sql = f"SELECT job_id, t, kind, detail FROM events WHERE job_id IN (SELECT id {sel}) ORDER BY t"
            for jid, t, kind, detail in self._query(sql, tuple(params)):
                by_id[jid].events.append((t, kind, detail))
        return jobs

    def listing(self, status: str | None = None, limit: int | None = None) -> list[tuple]:
        """What ``packlab queue ls`` shows, without unpickling anything: rows of (id,
        status, late, attempts, owner, submitted, fn, error), in submission order."""
        sql = "SELECT id, status, late, attempts, owner, submitted, fn, error FROM jobs"
        params: tuple = ()
        if status is not None:
            sql, params = sql + " WHERE status=?", (status,)
        return self._query(sql + " ORDER BY seq" + (f" LIMIT {int(limit)}" if limit else ""), params)

    @staticmethod
    def _job(row: tuple, cv) -> Job:
        (jid, seq, key, fn, owner, rank, deadline, timeout, res, retry, status, attempts, submitted,
         late, error, tb, payload, result, has_result, next_attempt, tags) = row
        j = Job(jid, seq, fn, payload, owner=owner, rank=rank, deadline=deadline, timeout=timeout,
                key=key, resources=None if res is None else json.loads(res),
                retry=None if retry is None else cloudpickle.loads(retry), submitted=submitted, cv=cv,
                tags=None if tags is None else json.loads(tags))
        j.status, j.attempts, j.late, j.error, j.traceback = status, attempts, bool(late), error, tb
        j.next_attempt = next_attempt if status == RETRYING else None
        if has_result:
            j._result, j._has_result = cloudpickle.loads(result), True
        return j

    def unfinished_keys(self, prefix: str = "") -> set[str]:
        """The idempotency keys starting with ``prefix`` of the unfinished jobs (queued,
        running, retrying), unpickling nothing."""
        marks = ",".join("?" * len(UNFINISHED))
        rows = self._query(f"SELECT key FROM jobs WHERE status IN ({marks}) AND substr(key, 1, ?) = ?",
                           (*UNFINISHED, len(prefix), prefix))
        return {k for (k,) in rows}

    def unfinished(self, cv: Signal | None = None) -> list[Job]:
        """Jobs a restarted queue must run: queued, running or retrying."""
        return self.load(status=UNFINISHED, cv=cv)

    def _change(self, job_id: str, check: Callable[[str, str], None], status: str, kind: str,
                attempts: int | None) -> tuple[str, int]:
        """Check a job's status and change it in one transaction (needs no cluster)."""
        now = time.time()
        with failures.classified(self.path, f"mark job {job_id} {status}"), self._lock, self._write():
            rows = self._con.execute("SELECT status, attempts FROM jobs WHERE id=?", (job_id,)).fetchall()
            if not rows:
                raise PacklabError(f"job id {job_id!r} does not exist in store {self.path}: "
                                   "list ids with `packlab queue ls`.", field="job_id", value=job_id)
            was, n = rows[0]
            check(job_id, was)
            self._con.execute("UPDATE jobs SET status=?, attempts=?, updated=? WHERE id=?",
                              (status, n if attempts is None else attempts, now, job_id))
            self._con.execute(EVENT_SQL, (job_id, now, kind, f"was {was} after {n} attempts"))
        return was, n

    def requeue(self, job_id: str) -> tuple[str, int]:
        """Mark a dead/failed/cancelled job queued again with fresh attempts, for the
        next ``resume()`` (needs no cluster). Returns what it was: (status, attempts)."""
        return self._change(job_id, check_requeueable, QUEUED, Kind.REQUEUED, 0)

    def cancel(self, job_id: str) -> tuple[str, int]:
        """Mark an unfinished job cancelled (needs no cluster); a finished one raises."""
        return self._change(job_id, check_cancellable, CANCELLED, Kind.CANCELLED, None)

    # -- requests to the live driver (from another process) ------------------------------
    def request(self, job_id: str, action: str) -> None:
        """Ask the queue that drives this store to ``cancel``/``requeue`` a job: it reads
        its requests every :data:`~.states.POLL` seconds and acts in its own loop."""
        with failures.classified(self.path, f"send the {action} of job {job_id} to its queue"), self._lock, \
                self._write():
            if not self._con.execute("SELECT 1 FROM jobs WHERE id=?", (job_id,)).fetchall():
                raise PacklabError(f"job id {job_id!r} does not exist in store {self.path}: "
                                   "list ids with `packlab queue ls`.", field="job_id", value=job_id)
            self._con.execute("INSERT INTO requests VALUES (?,?,?)", (job_id, action, time.time()))

    def requests(self) -> list[tuple[int, str, str]]:
        """Pending requests: (rowid, job id, action)."""
        return self._query("SELECT rowid, job_id, action FROM requests ORDER BY rowid")

    def driver(self) -> tuple | None:
        """The lease row (driver, pid, host, started, heartbeat), or None."""
        rows = self._query("SELECT driver, pid, host, started, heartbeat FROM lease")
        return rows[0] if rows else None

    def dead_letters(self, cv: Signal | None = None) -> list[Job]:
        return self.load(status=(DEAD,), cv=cv)

    def failed(self, cv: Signal | None = None) -> list[Job]:
        return self.load(status=(FAILED,), cv=cv)
