"""The queue's store: an embedded SQLite database in WAL mode.

Job records, their payloads (function and arguments, cloudpickled), results and
events live here, so a dead driver loses nothing. Writes go through one writer thread
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
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle

from .. import config
from ..errors import LeaseError, PacklabError, StoreError
from . import failures
from .job import Job, Signal, check_cancellable, check_requeueable
from .schema import missing_columns, open_store, remove_store, transaction
from .states import CANCELLED, DEAD, FAILED, QUEUED, RETRYING, STATUSES, UNFINISHED, Kind

_INSERT = ("INSERT INTO jobs (id, seq, key, fn, owner, priority, deadline, timeout, resources, retry,"
           " status, attempts, submitted, updated, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_EVENT = "INSERT INTO events VALUES (?,?,?,?)"
_CHUNK = 500  # ids bound per query: far below SQLite's limit on variables
_COLUMNS = ("id, seq, key, fn, owner, priority, deadline, timeout, resources, retry, status, attempts,"
            " submitted, late, error, traceback, payload, result, has_result, next_attempt")
#: Run inside a store's write transaction: a row means this driver still holds the lease.
HELD = "SELECT 1 FROM lease WHERE driver=?"
log = logging.getLogger("packlab.queue")
_MAX_BATCH = 20000  # writes per commit
_PAUSE = 3.0  # under load, wait this many times the last commit's duration before the next
_MAX_PAUSE = 0.05  # s

# A queued write: (kind, key, params, then, failed). kind "U" (update one job: key is its
# id, params a dict of columns, merged with the job's other updates of the batch), "I"
# (insert a job), "E" (an event), "S" (any statement: key is the SQL), "" (a flush marker).


class Store:
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
        self.path, self._con, self.created = open_store(store, mode)
        if mode != "ro":  # see packlab.queue.synchronous: a commit is on the disk, not in its cache
            self._con.execute(f"PRAGMA synchronous={config.get('queue.synchronous').upper()}")
        missing = {name for name, _ in missing_columns(self._con)}  # only a read-only opener has any
        self._columns = ", ".join(f"NULL AS {c}" if c in missing else c for c in _COLUMNS.split(", "))
        self._ops: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        #: What stopped the store: a :class:`StoreError` (the disk full or read-only, a
        #: broken file: see :mod:`.failures`) or the :class:`LeaseError` of a lost lease.
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
        """The store itself refused a write (not the row: see :mod:`.failures`): record
        why, write nothing more, and tell the queue (once)."""
        with self._lock:
            if self.failed is not None or self.error is not None:
                return
            self.failed = time.time()
        self.error = failures.store_failure(self.path, e)
        log.error("%s", self.error)
        if self.on_failed is not None:
            self.on_failed(self.error)

    # -- writing (through the writer thread) --------------------------------------------
    def start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="packlab-queue-store", daemon=True)
        self._writer.start()

    def _put(self, op: tuple) -> None:
        if self._writer is None:
            self._commit([op])
        else:
            self._ops.put(op)

    def write(self, sql: str, params: tuple, then: Callable[[], None] | None = None,
              failed: Callable[[BaseException], None] | None = None) -> None:
        """Queue one statement; ``then`` runs once it is committed, ``failed(error)``
        if it cannot be (e.g. a duplicate idempotency key written by another process)."""
        self._put(("S", sql, params, then, failed))

    def flush(self, timeout: float = 30.0, check: bool = True) -> None:
        """Block until every queued write is committed; with ``check``, raise a
        PacklabError naming the writes that failed since the last checked flush."""
        if self._writer is not None:
            done = threading.Event()
            self._ops.put(("", None, None, done.set, None))
            if not done.wait(timeout):
                raise StoreError(f"store {self.path}: writes did not commit within {timeout} s")
        if not check:
            return
        if self.fence is not None and self.fence.lost:
            raise self.fence.lost_error()
        if isinstance(self.error, StoreError):
            raise self.error
        with self._lock:
            rejected, self._rejected = self._rejected, []
        if rejected:
            more = f" (and {len(rejected) - 3} more)" if len(rejected) > 3 else ""
            raise PacklabError(f"store {self.path}: {len(rejected)} writes failed: {'; '.join(rejected[:3])}"
                               f"{more}")

    def _write_loop(self) -> None:
        while True:
            first = self._ops.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    op = self._ops.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    self._ops.put(None)
                    break
                batch.append(op)
            t0 = time.perf_counter()
            self._commit(batch)
            if len(batch) > 1:  # under load: leave the write lock free for other processes
                time.sleep(min(_MAX_PAUSE, _PAUSE * (time.perf_counter() - t0)))

    def _commit(self, batch: list) -> None:
        if self.failed is not None or self.error is not None or not any(op[0] for op in batch):
            # Flush markers only, or a failed store (nothing more is written, and no
            # job it could not record runs): only the flushes return.
            for op in batch:
                if not op[0] and op[3] is not None:
                    op[3]()
            return
        try:
            with self._lock, self._write():
                self._apply(batch)
            self.commits += 1
            done = [(op[3], None) for op in batch]
        except LeaseError as e:  # the lease is lost: nothing is written, flushes still return
            done = [(op[3], e if op[0] else None) for op in batch]
        except sqlite3.Error as e:
            if not failures.row_error(e):  # the store's fault, not a row's: it stops here
                self._fail(e)
                self._commit(batch)
                return
            # One bad row must not take the others down with it: write them one by one.
            done = [self._commit_one(op) for op in batch]
        for then, err in done:
            if err is None and then is not None:
                then()
        for op, (_, err) in zip(batch, done, strict=True):
            if err is not None and op[4] is not None:
                op[4](err)

    def _apply(self, batch: list) -> None:
        """Execute a batch inside an open transaction: inserts first, then each job's
        merged update, then statements and events, each kind in one ``executemany``."""
        inserts, events, stmts = [], [], []
        updates: dict[str, dict] = {}
        for kind, key, params, _, _ in batch:
            if kind == "I":
                inserts.append(params)
            elif kind == "U":
                updates.setdefault(key, {}).update(params)
            elif kind == "E":
                events.append(params)
            elif kind == "S":
                stmts.append((key, params))
        if inserts:
            self._con.executemany(_INSERT, inserts)
        by_cols: dict[tuple, list] = {}
        for jid, cols in updates.items():
            by_cols.setdefault(tuple(cols), []).append((*cols.values(), jid))
        for cols, rows in by_cols.items():
            self._con.executemany(f"UPDATE jobs SET {', '.join(f'{c}=?' for c in cols)} WHERE id=?", rows)
        for sql, params in stmts:
            self._con.execute(sql, params)
        if events:
            self._con.executemany(_EVENT, events)

    def _commit_one(self, op: tuple) -> tuple[Callable | None, BaseException | None]:
        if not op[0]:
            return op[3], None
        if self.failed is not None or self.error is not None:  # failed meanwhile: nothing runs
            return None, None
        try:
            with self._lock, self._write():  # its own transaction
                self._apply([op])
            return op[3], None
        except LeaseError as e:  # the lease is lost
            return op[3], e
        except sqlite3.Error as e:
            if not failures.row_error(e):  # not the row's fault: the store itself fails
                self._fail(e)
                return None, None
            sql = {"I": _INSERT, "E": _EVENT, "U": "UPDATE jobs"}.get(op[0], op[1])
            first = op[2][0] if isinstance(op[2], tuple) else op[1]
            with self._lock:
                self._rejected.append(f"{sql.split('(')[0].strip()} {first!r}: {e}")
            return op[3], e

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
                               time.time(), job._payload), then, failed))

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
         late, error, tb, payload, result, has_result, next_attempt) = row
        j = Job(jid, seq, fn, payload, owner=owner, rank=rank, deadline=deadline, timeout=timeout,
                key=key, resources=None if res is None else json.loads(res),
                retry=None if retry is None else cloudpickle.loads(retry), submitted=submitted, cv=cv)
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
            self._con.execute(_EVENT, (job_id, now, kind, f"was {was} after {n} attempts"))
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
