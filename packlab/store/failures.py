"""What a refused store write means: the one place that tells the row's fault from the store's.

A write SQLite refuses is either

* **the row's fault**: a constraint (another process wrote the same idempotency key
  first). That row fails, and the other rows of its commit go on; or
* **the store's**: the filesystem is full, read-only (remounted so after an error), gives
  I/O errors, the file is corrupt, or another process held the write lock past the busy
  timeout. Nothing more can be recorded, and a job must never run unrecorded, so the
  queue stops: it dispatches nothing more, cancels its in-flight attempts (their records
  stay as they were, so ``resume()`` runs them) and raises the :class:`StoreError` built
  here, which says what happened and what to do. Nothing committed before is lost:
  SQLite rolls back the refused transaction only.

SQLite names a full disk (``SQLITE_FULL``), but a write to a file that was open when its
filesystem turned read-only is only an I/O error (``SQLITE_IOERR_WRITE``); so the folder
is probed with a small write of its own, whose ``errno`` (``ENOSPC``, ``EROFS``, ``EIO``)
says which.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import uuid
from collections.abc import Iterator

from ..errors import StoreError

# SQLite's primary result codes (the low byte of an extended code).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _CONSTRAINT, _NOTADB = (
    5, 6, 8, 10, 11, 13, 14, 19, 26)
FULL, READ_ONLY, IO_ERROR, CORRUPT, LOCKED, OTHER = (
    "full", "read-only", "io-error", "corrupt", "locked", "other")

_REASONS = {
    FULL: ("the filesystem holding it is full", "Free space there"),
    READ_ONLY: ("the filesystem holding it is read-only (a kernel remounts one so after a disk error)",
                "Make it writable again (remount it read-write, after fsck if it was remounted on an error)"),
    IO_ERROR: ("its filesystem reports I/O errors", "Check the disk (dmesg) and make it writable again"),
    CORRUPT: ("the file is corrupt", "Restore it from a copy (or start a new store)"),
    LOCKED: ("another process held its write lock past SQLite's 30 s busy timeout",
             "Stop the process holding it (fuser STORE shows which)"),
    OTHER: ("SQLite refused a write", "Check the file and its filesystem"),
}


def row_error(e: BaseException) -> bool:
    """Whether a refused write is the row's own fault (a constraint), not the store's.

    Examples
    --------
    >>> row_error(sqlite3.IntegrityError("UNIQUE constraint failed: jobs.key"))
    True
    >>> row_error(sqlite3.OperationalError("database or disk is full"))
    False
    """
    return isinstance(e, sqlite3.IntegrityError) or _code(e) == _CONSTRAINT


def _code(e: BaseException) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def probe(folder: str) -> OSError | None:
    """Write 4 KiB to a new file in ``folder``, fsync and remove it: the ``OSError`` that
    refused it (its ``errno`` says why), or ``None`` if the folder takes writes."""
    path = os.path.join(folder, f".packlab-probe-{uuid.uuid4().hex[:8]}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        return e
    try:
        os.write(fd, b"\0" * 4096)
        os.fsync(fd)
        return None
    except OSError as e:
        return e
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)


def kind(path: str, e: BaseException) -> str:
    """What failed, for a store at ``path`` whose write raised ``e``: one of ``"full"``,
    ``"read-only"``, ``"io-error"``, ``"corrupt"``, ``"locked"``, ``"other"``."""
    code = _code(e)
    if code in (_BUSY, _LOCKED):
        return LOCKED
    if code in (_CORRUPT, _NOTADB):
        return CORRUPT
    if isinstance(e, OSError) and e.errno is not None:
        seen = e
    else:
        seen = probe(os.path.dirname(os.path.abspath(path)))
    if seen is not None:
        if seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return FULL
        if seen.errno == errno.EROFS:
            return READ_ONLY
        if seen.errno == errno.EIO:
            return IO_ERROR
    if code == _FULL:
        return FULL
    if code == _READONLY:
        return READ_ONLY
    if code in (_IOERR, _CANTOPEN):
        return IO_ERROR
    return OTHER


def describe(path: str, e: BaseException) -> str:
    """``e`` in words, e.g. ``"the filesystem holding it is full (OperationalError: ...)"``."""
    return f"{_REASONS[kind(path, e)][0]} ({type(e).__name__}: {e})"


def store_failure(path: str, e: BaseException, doing: str | None = None) -> StoreError:
    """The :class:`StoreError` for a store at ``path`` that refused a write with ``e``:
    a running queue's (``doing=None``: it stopped), or what could not be done (``doing``,
    e.g. ``"open a JobQueue on it"``). ``.kind`` holds :func:`kind`'s answer."""
    k = kind(path, e)
    reason, fix = _REASONS[k]
    if doing is None:
        what = ("so this queue cannot record jobs: it stopped dispatching, and its attempts in flight "
                "were cancelled (their records stay as they were)")
    else:
        what = f"so packlab cannot {doing}"
    return StoreError(f"store {path}: {reason} ({type(e).__name__}: {e}), {what}. Nothing recorded so far "
                      f"is lost. {fix}, then JobQueue(cluster, store={path!r}).resume() finishes the work.",
                      kind=k)


@contextlib.contextmanager
def classified(path: str, doing: str) -> Iterator[None]:
    """Turn a store failure raised in the block into :func:`store_failure`'s StoreError (a
    row's own fault, a constraint, is raised as it is)."""
    try:
        yield
    except sqlite3.Error as e:
        if row_error(e):
            raise
        raise store_failure(path, e, doing) from e


__all__ = ["classified", "describe", "kind", "probe", "row_error", "store_failure"]
