"""The queue's store: an embedded SQLite database in WAL mode.

Job records, their payloads (function and arguments, cloudpickled), results and
events live here, so a dead driver loses nothing. Writes go through one writer thread
that commits whatever has piled up in a single transaction: under load that batches
thousands of rows per commit, when idle a write lands at once. Readers (the CLI,
another process) use their own connections; WAL lets them read while the queue writes.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import cloudpickle

from ..errors import PacklabError
from .job import DEAD, FAILED, QUEUED, RETRYING, RUNNING, STATUSES, Job, Signal, check_requeueable
from .lease import HELD
from .schema import missing_columns, open_checked

_INSERT = ("INSERT INTO jobs (id, seq, key, fn, owner, priority, deadline, timeout, resources, retry,"
           " status, attempts, submitted, updated, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_UNFINISHED = (QUEUED, RUNNING, RETRYING)
_CHUNK = 500  # ids bound per query: far below SQLite's limit on variables
_COLUMNS = ("id, seq, key, fn, owner, priority, deadline, timeout, resources, retry, status, attempts,"
            " submitted, late, error, traceback, payload, result, has_result, next_attempt")
_RUNNING_ROWS = 300  # jobs per UPDATE in dispatching(): 3 variables each, under SQLite's historic 999


def _running_sql(n: int, fenced: bool) -> str:
    """One statement marking ``n`` jobs running (one step: the loop thread waits less
    for the GIL than with one per job); ``fenced``: only while the lease is ours."""
    held = f" AND EXISTS ({HELD})" if fenced else ""
    return (f"UPDATE jobs SET status='{RUNNING}', updated=?, attempts=CASE id {'WHEN ? THEN ? ' * n}END "
            f"WHERE id IN ({','.join('?' * n)}){held}")


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
        self.path, self._con = open_checked(store, mode)
        missing = {name for name, _ in missing_columns(self._con)}  # only a read-only opener has any
        self._columns = ", ".join(f"NULL AS {c}" if c in missing else c for c in _COLUMNS.split(", "))
        self._ops: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        #: The last error that made a write fail for a reason other than the row itself
        #: (disk full, a broken file): the store cannot be trusted; ``submit`` raises it.
        self.error: BaseException | None = None
        self._rejected: list[str] = []  # rows that failed since the last flush()
        #: The driver lease (see lease.py) every write transaction checks, once a queue
        #: holds one: a driver that lost its lease cannot overwrite the new driver's rows.
        self.fence: Any = None

    def _begin(self) -> None:
        """Open a write transaction, checking the lease; a lost lease fails the store."""
        if self.fence is None:
            self._con.execute("BEGIN")
            return
        self._con.execute("BEGIN IMMEDIATE")  # the lease cannot change before we commit
        if not self._con.execute(HELD, (self.fence.driver,)).fetchall():
            self._lost()

    def _lost(self) -> None:
        """Inside a write transaction that found another driver's lease: fail the store."""
        self._rollback()
        self.error = self.fence.lost_error()
        self.fence.mark_lost()
        raise self.error

    # -- writing (through the writer thread) --------------------------------------------
    def start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="packlab-queue-store", daemon=True)
        self._writer.start()

    def write(self, sql: str, params: tuple, then: Callable[[], None] | None = None,
              failed: Callable[[BaseException], None] | None = None) -> None:
        """Queue one statement; ``then`` runs once it is committed, ``failed(error)``
        if it cannot be (e.g. a duplicate idempotency key written by another process)."""
        if self._writer is None:
            self._commit([(sql, params, then, failed)])
        else:
            self._ops.put((sql, params, then, failed))

    def flush(self, timeout: float = 30.0, check: bool = True) -> None:
        """Block until every queued write is committed; with ``check``, raise a
        PacklabError naming the writes that failed since the last checked flush."""
        if self._writer is not None:
            done = threading.Event()
            self._ops.put(("", (), done.set, None))
            if not done.wait(timeout):
                raise PacklabError(f"store {self.path}: writes did not commit within {timeout} s")
        if not check:
            return
        if self.fence is not None and self.fence.lost:
            raise self.fence.lost_error()
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
            while len(batch) < 20000:
                try:
                    op = self._ops.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    self._ops.put(None)
                    break
                batch.append(op)
            self._commit(batch)

    def _commit(self, batch: list) -> None:
        try:
            with self._lock:
                self._begin()
                try:
                    i = 0
                    while i < len(batch):  # group runs of the same statement into executemany
                        j = i
                        while j < len(batch) and batch[j][0] == batch[i][0]:
                            j += 1
                        if batch[i][0]:
                            self._con.executemany(batch[i][0], [b[1] for b in batch[i:j]])
                        i = j
                    self._con.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            done = [(then, None) for _, _, then, _ in batch]
        except sqlite3.Error:
            # One bad row must not take the others down with it: write them one by one.
            done = [self._commit_one(op) for op in batch]
        except PacklabError as e:  # the lease is lost: nothing is written, flushes still return
            done = [(then, e if sql else None) for sql, _, then, _ in batch]
        for then, err in done:
            if err is None:
                if then is not None:
                    then()
        for (_, _, _, failed), (_, err) in zip(batch, done, strict=True):
            if err is not None and failed is not None:
                failed(err)

    def _commit_one(self, op: tuple) -> tuple[Callable | None, BaseException | None]:
        sql, params, then, _ = op
        if not sql:
            return then, None
        try:
            with self._lock:
                self._begin()  # its own transaction
                try:
                    self._con.execute(sql, params)
                    self._con.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            return then, None
        except PacklabError as e:  # the lease is lost
            return then, e
        except sqlite3.Error as e:
            what = f"{sql.split('(')[0].strip()} {params[0]!r}: {e}"
            with self._lock:
                self._rejected.append(what)
            if not isinstance(e, sqlite3.IntegrityError):
                self.error = e  # not the row's fault: the store itself fails
            return then, e

    def _rollback(self) -> None:
        try:
            self._con.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        if self._writer is not None:
            self._ops.put(None)
            self._writer.join()
            self._writer = None
        self._con.close()

    # -- job records ---------------------------------------------------------------------
    def insert(self, job: Job, then: Callable[[], None] | None = None,
               failed: Callable[[BaseException], None] | None = None) -> None:
        """Queue the job's record; ``then`` runs once it committed, ``failed(error)`` if
        it was refused (its idempotency key already exists: another process won)."""
        retry = None if job.retry is None else cloudpickle.dumps(job.retry)
        res = None if job.resources is None else json.dumps(job.resources)
        self.write(_INSERT, (job.id, job.seq, job.key, job.fn_name, job.owner, job.rank, job.deadline,
                             job.timeout, res, retry, job.status, job.attempts, job.submitted,
                             time.time(), job._payload), then, failed)

    def dispatching(self, rows: list[tuple[str, int]], now: float, hand_over: Callable[[], Any]) -> Any:
        """Mark jobs running (``rows`` of (id, attempts)) and call ``hand_over()``
        (which gives them to Dask) inside one write transaction that checks the lease.

        This one write is synchronous, once per dispatched batch: while it holds the
        write lock no other driver can take the lease over, so a driver that lost it
        hands nothing to Dask. Raises the lease error (nothing handed over) when the
        lease is lost, ``sqlite3.Error`` when the store cannot be written (nothing handed
        over either); returns what ``hand_over`` returned.
        """
        fence = self.fence
        with self._lock:
            self._con.execute("BEGIN" if fence is None else "BEGIN IMMEDIATE")
            try:
                marked = 0
                for i in range(0, len(rows), _RUNNING_ROWS):
                    chunk = rows[i:i + _RUNNING_ROWS]
                    params = [now, *(x for row in chunk for x in row), *(jid for jid, _ in chunk)]
                    if fence is not None:
                        params.append(fence.driver)
                    marked += self._con.execute(_running_sql(len(chunk), fence is not None),
                                                params).rowcount
                if marked < len(rows) and fence is not None and \
                        not self._con.execute(HELD, (fence.driver,)).fetchall():
                    self._lost()
                out = hand_over()
            except BaseException:
                self._rollback()
                raise
            try:
                self._con.execute("COMMIT")
            except sqlite3.Error as e:  # on Dask, recorded as before: the store fails (submit raises)
                self._rollback()
                self.error = e
        return out

    def update(self, job: Job, **extra: Any) -> None:
        """Write the job's status, attempts and flags (and any extra columns)."""
        cols = {"status": job.status, "attempts": job.attempts, "late": int(job.late),
                "updated": time.time(), **extra}
        sets = ", ".join(f"{c}=?" for c in cols)
        self.write(f"UPDATE jobs SET {sets} WHERE id=?", (*cols.values(), job.id))

    def event(self, job_id: str, t: float, kind: str, detail: str) -> None:
        self.write("INSERT INTO events VALUES (?,?,?,?)", (job_id, t, kind, detail))

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

    def unfinished(self, cv: Signal | None = None) -> list[Job]:
        """Jobs a restarted queue must run: queued, running or retrying."""
        return self.load(status=_UNFINISHED, cv=cv)

    def requeue(self, job_id: str) -> tuple[str, int]:
        """Mark a dead/failed/cancelled job queued again with fresh attempts, for the
        next ``resume()`` (needs no cluster). Returns what it was: (status, attempts)."""
        now = time.time()
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")  # check and update in one transaction
            try:
                rows = self._con.execute("SELECT status, attempts FROM jobs WHERE id=?", (job_id,)).fetchall()
                if not rows:
                    raise PacklabError(f"job id {job_id!r} does not exist in store {self.path}: "
                                       "list ids with `packlab queue ls`.")
                status, attempts = rows[0]
                check_requeueable(job_id, status)
                self._con.execute("UPDATE jobs SET status=?, attempts=0, updated=? WHERE id=?",
                                  (QUEUED, now, job_id))
                self._con.execute("INSERT INTO events VALUES (?,?,?,?)",
                                  (job_id, now, "requeued", f"was {status} after {attempts} attempts"))
                self._con.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        return status, attempts

    def dead_letters(self, cv: Signal | None = None) -> list[Job]:
        return self.load(status=(DEAD,), cv=cv)

    def failed(self, cv: Signal | None = None) -> list[Job]:
        return self.load(status=(FAILED,), cv=cv)
