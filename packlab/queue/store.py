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
from .job import DEAD, FAILED, QUEUED, RETRYING, RUNNING, STATUSES, Job

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, seq INTEGER, key TEXT UNIQUE, fn TEXT, owner TEXT, priority INTEGER,
  deadline REAL, timeout REAL, resources TEXT, retry BLOB, status TEXT, attempts INTEGER,
  submitted REAL, updated REAL, late INTEGER DEFAULT 0, error TEXT, traceback TEXT,
  payload BLOB, result BLOB, has_result INTEGER DEFAULT 0);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS events (job_id TEXT, t REAL, kind TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
"""
_INSERT = ("INSERT INTO jobs (id, seq, key, fn, owner, priority, deadline, timeout, resources, retry,"
           " status, attempts, submitted, updated, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
_UNFINISHED = (QUEUED, RUNNING, RETRYING)
_COLUMNS = ("id, seq, key, fn, owner, priority, deadline, timeout, resources, retry, status, attempts,"
            " submitted, late, error, traceback, payload, result, has_result")


def store_path(store: str | os.PathLike) -> str:
    """The file path of a store given as a path or a SQLAlchemy-style URL
    (``sqlite:///relative.db``, ``sqlite:////absolute/path.db``).

    Examples
    --------
    >>> store_path("sqlite:////tmp/q.db"), store_path("sqlite:///q.db"), store_path("q.db")
    ('/tmp/q.db', 'q.db', 'q.db')
    """
    s = os.fspath(store)
    if "://" in s:
        scheme, _, rest = s.partition("://")
        if scheme != "sqlite":
            raise PacklabError(
                f"store={s!r} is not supported: the queue's store is SQLite; give a file path "
                "or a sqlite:///path URL."
            )
        s = rest[1:] if rest.startswith("/") else rest
    return os.path.expanduser(s)


def _connect(path: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
    return con


def open_checked(store: str | os.PathLike) -> tuple[str, sqlite3.Connection]:
    """Open (creating) the database, or raise a PacklabError that says why and how to fix."""
    path = store_path(store)
    folder = os.path.dirname(os.path.abspath(path))
    hint = "Pass store= a path in a folder you can write, e.g. store='~/packlab.db'."
    if not os.path.isdir(folder):
        raise PacklabError(f"store={os.fspath(store)!r}: the folder {folder} does not exist. {hint}")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise PacklabError(f"store={os.fspath(store)!r} is not writable. {hint}")
    try:
        con = _connect(path)
        con.executescript(_SCHEMA)
    except sqlite3.DatabaseError as e:
        raise PacklabError(f"store={os.fspath(store)!r} cannot be used as a SQLite database ({e}). "
                           f"{hint}") from None
    return path, con


class Store:
    """A job store. ``Store(path)`` alone (no queue) serves the CLI.

    Examples
    --------
    >>> import tempfile, os
    >>> s = Store(os.path.join(tempfile.mkdtemp(), "q.db"))
    >>> s.counts()
    {}
    >>> s.close()
    """

    def __init__(self, store: str | os.PathLike) -> None:
        self.path, self._con = open_checked(store)
        self._ops: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    # -- writing (through the writer thread) --------------------------------------------
    def start_writer(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="packlab-queue-store", daemon=True)
        self._writer.start()

    def write(self, sql: str, params: tuple, then: Callable[[], None] | None = None) -> None:
        """Queue one statement; ``then`` runs after the transaction holding it committed."""
        if self._writer is None:
            with self._lock:
                self._con.execute(sql, params)
            if then:
                then()
        else:
            self._ops.put((sql, params, then))

    def flush(self, timeout: float = 30.0) -> None:
        """Block until every queued write is committed."""
        if self._writer is None:
            return
        done = threading.Event()
        self._ops.put(("", (), done.set))
        if not done.wait(timeout):
            raise PacklabError(f"store {self.path}: writes did not commit within {timeout} s")

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
                self._con.execute("BEGIN")
                i = 0
                while i < len(batch):  # group runs of the same statement into executemany
                    j = i
                    while j < len(batch) and batch[j][0] == batch[i][0]:
                        j += 1
                    if batch[i][0]:
                        self._con.executemany(batch[i][0], [b[1] for b in batch[i:j]])
                    i = j
                self._con.execute("COMMIT")
        except sqlite3.Error as e:  # keep going; surface it in stats() and the next submit
            self.error = e
            try:
                self._con.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        for _, _, then in batch:
            if then is not None:
                then()

    def close(self) -> None:
        if self._writer is not None:
            self._ops.put(None)
            self._writer.join()
            self._writer = None
        self._con.close()

    # -- job records ---------------------------------------------------------------------
    def insert(self, job: Job, then: Callable[[], None] | None = None) -> None:
        retry = None if job.retry is None else cloudpickle.dumps(job.retry)
        res = None if job.resources is None else json.dumps(job.resources)
        self.write(_INSERT, (job.id, job.seq, job.key, job.fn_name, job.owner, job.rank, job.deadline,
                             job.timeout, res, retry, job.status, job.attempts, job.submitted,
                             time.time(), job._payload), then)

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
             cv: threading.Condition | None = None, limit: int | None = None) -> list[Job]:
        """Jobs from the database (with their events), by id or by status."""
        where, params = [], []
        if job_ids is not None:
            ids = list(job_ids)
            where.append(f"id IN ({','.join('?' * len(ids))})")
            params += ids
        if status is not None:
            st = list(status)
            bad = [s for s in st if s not in STATUSES]
            if bad:
                raise PacklabError(f"status={bad[0]!r} is unknown: choose one of {list(STATUSES)}.")
            where.append(f"status IN ({','.join('?' * len(st))})")
            params += st
        sql = f"SELECT {_COLUMNS} FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq" + (f" LIMIT {int(limit)}" if limit else "")
        jobs = [self._job(row, cv) for row in self._query(sql, tuple(params))]
        if jobs:
            by_id = {j.id: j for j in jobs}
            marks = ",".join("?" * len(by_id))
            for jid, t, kind, detail in self._query(
                    f"SELECT job_id, t, kind, detail FROM events WHERE job_id IN ({marks}) ORDER BY t",
                    tuple(by_id)):
                by_id[jid].events.append((t, kind, detail))
        return jobs

    @staticmethod
    def _job(row: tuple, cv) -> Job:
        (jid, seq, key, fn, owner, rank, deadline, timeout, res, retry, status, attempts, submitted,
         late, error, tb, payload, result, has_result) = row
        j = Job(jid, seq, fn, payload, owner=owner, rank=rank, deadline=deadline, timeout=timeout,
                key=key, resources=None if res is None else json.loads(res),
                retry=None if retry is None else cloudpickle.loads(retry), submitted=submitted, cv=cv)
        j.status, j.attempts, j.late, j.error, j.traceback = status, attempts, bool(late), error, tb
        if has_result:
            j._result, j._has_result = cloudpickle.loads(result), True
        return j

    def unfinished(self, cv=None) -> list[Job]:
        """Jobs a restarted queue must run: queued, running or retrying."""
        return self.load(status=_UNFINISHED, cv=cv)

    def requeue(self, job_id: str) -> Job:
        """Mark a dead/failed/cancelled job queued again with fresh attempts, for the
        next ``resume()`` (needs no cluster)."""
        jobs = self.load([job_id])
        if not jobs:
            raise PacklabError(f"job id {job_id!r} does not exist in store {self.path}: "
                               "list ids with `packlab queue ls`.")
        job = jobs[0]
        if job.status in _UNFINISHED or job.status == "done":
            raise PacklabError(f"job {job_id} is {job.status}: only dead, failed or cancelled jobs "
                               "can be requeued.")
        now = time.time()
        with self._lock:
            self._con.execute("UPDATE jobs SET status=?, attempts=0, updated=? WHERE id=?",
                              (QUEUED, now, job_id))
            self._con.execute("INSERT INTO events VALUES (?,?,?,?)",
                              (job_id, now, "requeued", f"was {job.status} after {job.attempts} attempts"))
        job.status, job.attempts = QUEUED, 0
        return job

    def dead_letters(self, cv=None) -> list[Job]:
        return self.load(status=(DEAD,), cv=cv)

    def failed(self, cv=None) -> list[Job]:
        return self.load(status=(FAILED,), cv=cv)
