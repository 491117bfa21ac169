"""The store's write-behind: one writer thread commits whatever has piled up in a single
transaction that checks the driver lease (see :mod:`.jobstore`).

Under load that batches thousands of rows per commit, and the updates of one job within
a batch become one row update. Between two commits under load the writer pauses a few
times as long as the commit took, so the write lock is free most of the time and
another process (``packlab queue requeue``) gets it within milliseconds; when idle a
write lands at once. One bad row (a duplicate idempotency key) is rejected alone; a
failing store (the disk full or read-only) stops every write (see :mod:`.failures`).
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable

from ..errors import LeaseError, PacklabError, StoreError
from ..store import failures

INSERT_SQL = ("INSERT INTO jobs (id, seq, key, fn, owner, priority, deadline, timeout, resources, retry,"
              " status, attempts, submitted, updated, payload, tags)"
              " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
EVENT_SQL = "INSERT INTO events VALUES (?,?,?,?)"
_MAX_BATCH = 20000  # writes per commit
_PAUSE = 3.0  # under load, wait this many times the last commit's duration before the next
_MAX_PAUSE = 0.05  # s

# A queued write: (kind, key, params, then, failed). kind "U" (update one job: key is its
# id, params a dict of columns, merged with the job's other updates of the batch), "I"
# (insert a job), "E" (an event), "S" (any statement: key is the SQL), "" (a flush marker).


class WriteBehind:
    """The writing half of :class:`~.jobstore.Store`. It uses the store's connection
    ``_con`` and ``_lock``, its ``_write()`` transaction (which checks the lease),
    ``_fail`` and the state ``Store.__init__`` sets: ``_ops`` (the queued writes),
    ``_writer`` (the thread), ``error``, ``failed``, ``fence``, ``_rejected`` and
    ``commits``."""

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
            self._con.executemany(INSERT_SQL, inserts)
        by_cols: dict[tuple, list] = {}
        for jid, cols in updates.items():
            by_cols.setdefault(tuple(cols), []).append((*cols.values(), jid))
        for cols, rows in by_cols.items():
            self._con.executemany(f"UPDATE jobs SET {', '.join(f'{c}=?' for c in cols)} WHERE id=?", rows)
        for sql, params in stmts:
            self._con.execute(sql, params)
        if events:
            self._con.executemany(EVENT_SQL, events)

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
            sql = {"I": INSERT_SQL, "E": EVENT_SQL, "U": "UPDATE jobs"}.get(op[0], op[1])
            first = op[2][0] if isinstance(op[2], tuple) else op[1]
            with self._lock:
                self._rejected.append(f"{sql.split('(')[0].strip()} {first!r}: {e}")
            return op[3], e


__all__ = ["WriteBehind"]
