"""One live driver per store: the driver lease.

Two queues driving one store would each run its unfinished jobs and overwrite each
other's records. So a ``JobQueue`` takes the store's lease when it opens: one row
(driver id, pid, host, started, heartbeat) written in a ``BEGIN IMMEDIATE`` transaction,
so of two openers exactly one wins. The holder refreshes the heartbeat from a small
thread every ``lease-timeout / 5``; ``close()`` deletes the row.

A lease is taken over when its holder is gone: at once when the holder ran on this host
and its pid is not alive (a killed driver, the common case), after ``lease-timeout``
without a heartbeat otherwise (a hung process, another host), or on request
(``take_over=True``). The store checks the lease in every write transaction, so a
driver that lost it (stopped for longer than the timeout, then woken) can no longer
write: its queue stops with an error instead of overwriting the new driver's records.

Staleness compares the holder's heartbeat with this host's clock: hosts sharing a store
(e.g. over NFS, where SQLite locking is itself unreliable) need synchronised clocks.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable

from .. import config
from ..errors import LeaseError
from ..files import pid_alive
from ..store import connect, transaction
from ..store.failures import classified
from ..units import seconds

log = logging.getLogger("packlab.queue")
#: Driver ids whose queue closed in this process. Their row stays when the store refused
#: its deletion (the disk full or read-only): the next queue takes such a lease at once.
_RELEASED: set[str] = set()

def lease_timeout() -> float:
    """``packlab.queue.lease-timeout`` in seconds: a lease whose heartbeat is older is
    taken over.

    Examples
    --------
    >>> lease_timeout()
    30.0
    """
    return seconds(config.get("queue.lease-timeout"), "packlab.queue.lease-timeout", allow_zero=False)


def _when(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


class Lease:
    """This driver's lease on a store (see the module docs). ``Lease(path)`` takes it or
    raises a :class:`~packlab.errors.LeaseError` naming the holder; ``release()`` gives
    it back. The lease's table is in the queue's DDL (:mod:`.schema`): open the store
    first.

    Examples
    --------
    >>> import tempfile, os
    >>> from packlab.queue import Store
    >>> path = os.path.join(tempfile.mkdtemp(), "q.db")
    >>> Store(path).close()
    >>> a = Lease(path)
    >>> try:
    ...     Lease(path)
    ... except LeaseError as e:
    ...     print("driven by another JobQueue" in str(e))
    True
    >>> a.release()
    >>> Lease(path).release()
    """

    def __init__(self, path: str, take_over: bool = False, timeout: float | None = None) -> None:
        self.path = path
        self.timeout = lease_timeout() if timeout is None else timeout
        self.driver = uuid.uuid4().hex
        self.lost = False  # set when a heartbeat or a store write finds another driver's row
        #: Called once when the lease is found lost (the queue stops its loop).
        self.on_lost: Callable[[], None] | None = None
        self.abspath = os.path.abspath(path)
        doing = "open a JobQueue on it (its driver lease is written first)"
        with classified(path, doing):
            self._con = connect(path)
        try:
            with classified(path, doing):
                self.taken_from = self._acquire(take_over)
        except BaseException:
            self._con.close()
            raise
        self._reader = connect(path, mode="ro")  # the driver thread's check before a hand-over
        self._stop = threading.Event()
        self._lost_lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="packlab-queue-lease", daemon=True)
        self._thread.start()

    def _acquire(self, take_over: bool) -> str | None:
        """Write our row; return why an earlier holder's row was replaced (or None)."""
        con = self._con
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        with transaction(con):  # the check and the write in one transaction: one winner
            row = con.execute("SELECT driver, pid, host, started, heartbeat FROM lease").fetchone()
            why = None if row is None else self._take_over_reason(row, take_over, host, now)
            con.execute("INSERT OR REPLACE INTO lease VALUES (1, ?, ?, ?, ?, ?)",
                        (self.driver, pid, host, now, now))
        if why:
            log.warning("store %s: took the driver lease over from pid %s on %s (%s)", self.path,
                        row[1], row[2], why)
        return why

    def _take_over_reason(self, row: tuple, take_over: bool, host: str, now: float) -> str:
        """Why the holder's lease may be taken, or raise the LeaseError naming it."""
        driver, pid, holder_host, started, beat = row
        if take_over:
            return "take_over=True"
        if driver in _RELEASED:
            return "its queue closed in this process (when its store could not delete the lease)"
        if holder_host == host and not pid_alive(pid):
            return "its process is gone"
        if now - beat > self.timeout:
            return f"no heartbeat for {now - beat:.0f} s"
        same = " (this process: close the other JobQueue first)" if holder_host == host and \
            pid == os.getpid() else ""
        raise LeaseError(
            f"store {self.path} is driven by another JobQueue: pid {pid} on host {holder_host}{same}, "
            f"since {_when(started)}, last heartbeat {now - beat:.1f} s ago. Two drivers would run its "
            f"jobs twice. Close the other queue, or wait: a driver that died is taken over automatically "
            f"(at once on this host, after {self.timeout:g} s of silence otherwise: "
            f"packlab.queue.lease-timeout). If you know it is gone, pass take_over=True.")

    def _beat(self) -> None:
        interval = self.timeout / 5
        while not self._stop.wait(interval):
            try:
                cur = self._con.execute("UPDATE lease SET heartbeat=? WHERE driver=?",
                                        (time.time(), self.driver))
            except sqlite3.Error as e:  # a busy store: the next beat tries again
                log.warning("store %s: lease heartbeat failed (%s)", self.path, e)
                continue
            if cur.rowcount == 0:
                self.mark_lost()
                return

    def mark_lost(self) -> None:
        """Another driver holds the store now: stop (once)."""
        with self._lost_lock:
            if self.lost:
                return
            self.lost = True
        log.error("store %s: another driver took over this queue's lease; it stops", self.path)
        if self.on_lost is not None:
            self.on_lost()

    def held(self) -> bool:
        """Whether this driver still holds the lease: a read (no lock), made before each
        hand-over to Dask."""
        if self.lost:
            return False
        rows = self._reader.execute("SELECT driver FROM lease").fetchall()  # all: no open snapshot
        return bool(rows) and rows[0][0] == self.driver

    def requests(self) -> list[tuple[int, str, str]]:
        """Requests from other processes (rowid, job id, action): read on the same
        lock-free connection."""
        return self._reader.execute("SELECT rowid, job_id, action FROM requests ORDER BY rowid").fetchall()

    def lost_error(self) -> LeaseError:
        """The error a queue that lost its lease raises."""
        return LeaseError(
            f"store {self.path}: another JobQueue took over this queue's driver lease (this one was "
            f"silent for over {self.timeout:g} s, or take_over=True was used), so this queue no longer "
            "records or runs jobs. Use the queue that took over, or close it and open a new one.")

    def release(self) -> None:
        """Stop the heartbeat and delete our row (if it is still ours)."""
        _RELEASED.add(self.driver)
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self._con.execute("DELETE FROM lease WHERE driver=?", (self.driver,))
        except sqlite3.Error as e:  # stale now: the next opener takes it over after the timeout
            log.warning("store %s: could not release the driver lease (%s)", self.path, e)
        finally:
            self._con.close()
            self._reader.close()
