"""Opening a packlab store safely: what a file is before anything touches it, a new store
created whole, and the errors that say why a file was refused.

A store is created owner-only (0600) before SQLite opens it, so its ``-wal`` and ``-shm``
side files, which SQLite creates with the main file's mode, are owner-only too: they hold
every job's pickled function, arguments and result. A symbolic link is never followed. A
file that is not a packlab store (another application's SQLite database, someone else's
``jobs`` table, garbage, a file we may not write) is refused before a single byte of it
changes: it is recognised from its header and schema, read through SQLite only (never
``open()``: closing any descriptor of a file drops every POSIX lock this process holds on
it, a live queue's included).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import uuid

from ..errors import PacklabError
from ..files import create_private_file
from . import failures
from .schemas import APPLICATION_ID, Schema, migrate, registered
from .sqlite import connect, store_path

#: The fix a refusal of a file that is not a packlab store gives.
NOT_A_STORE_FIX = "Pass store= a new file name (or a packlab store), e.g. store='~/packlab.db'."


def refuse(store: object, path: str, what: str, fix: str) -> PacklabError:
    """The error for a store file packlab will not use: what it is and how to fix it."""
    return PacklabError(f"store={os.fspath(store)!r} ({os.path.abspath(path)}) {what}; packlab left it "
                        f"unchanged. {fix}", field="store", value=store)


def identify(store: object, path: str) -> str:
    """What the file at ``path`` is: ``"new"`` (absent or empty) or ``"packlab"``; any
    other file raises a PacklabError saying what it is. Reads, never writes, follows no
    symbolic link (one in its place, or its side files', is refused), and opens the file
    through SQLite only.

    Examples
    --------
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "new.db")
    >>> identify(p, p)
    'new'
    >>> _ = open(p, "w").write("not sqlite" * 20)
    >>> identify(p, p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: store='...new.db' (...) is not an SQLite database ...
    """
    for p in (path, path + "-wal", path + "-shm"):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # absent
            if stat.S_ISLNK(os.lstat(p).st_mode):
                raise refuse(store, path, f"has a symbolic link at {p}",
                              "packlab never follows one (it could point anywhere); remove it or pass "
                              "store= a real file.")
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # absent (a parent is a file: said on creation)
        return "new"
    if not stat.S_ISREG(st.st_mode):
        raise refuse(store, path, "is not a regular file", NOT_A_STORE_FIX)
    if st.st_size == 0:
        return "new"
    # Never open() the file from Python: closing any descriptor of a file drops every POSIX
    # lock this process holds on it, SQLite's included (a live queue's in this process), and
    # another process may then reset its WAL under it. SQLite's own connections share its
    # locks, so the header (application_id) is read through one.
    if not os.access(path, os.R_OK):
        raise refuse(store, path, "cannot be read (permission denied)", "Check its permissions.")
    wal = os.path.exists(path + "-wal")
    try:
        con = connect(path, mode="ro", immutable=not wal)
        try:
            try:
                app = con.execute("PRAGMA application_id").fetchone()[0]
            except sqlite3.DatabaseError:
                raise refuse(store, path, "is not an SQLite database (its first bytes are not SQLite's "
                              "header)", NOT_A_STORE_FIX) from None
            if app == APPLICATION_ID:
                return "packlab"
            if app != 0:
                raise refuse(store, path, f"is the SQLite database of another application (application_id "
                              f"{app:#x})", NOT_A_STORE_FIX)
            # application_id 0: a store made before packlab set one, or anyone's database.
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            columns = {t: {r[1] for r in con.execute(f"PRAGMA table_info({t})")}
                       for s in registered() for t in s.legacy if t in tables}
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise refuse(store, path, f"is not a readable SQLite database ({e})", NOT_A_STORE_FIX) from None
    for s in registered():
        if s.legacy and all(t in tables and cols <= columns[t] for t, cols in s.legacy.items()):
            return "packlab"
    for s in registered():
        for t in s.legacy:
            if t in tables:
                raise refuse(store, path, f"is an SQLite database whose {t!r} table is not a packlab "
                             f"{s.name}'s (columns {sorted(columns[t])})", NOT_A_STORE_FIX)
    names = ", ".join(sorted(tables)[:5]) or "none"
    raise refuse(store, path, f"is an SQLite database that is not a packlab store (tables: {names})",
                 NOT_A_STORE_FIX)


def create_whole(path: str, *schemas: Schema) -> None:
    """Create the store ``path`` with ``schemas``, whole or not at all: the schema is
    written to a private file beside it, checkpointed out of its WAL, and hard-linked into
    place. A process killed while creating a store (SIGKILL between SQLite writing its
    header and the schema's commit) so leaves no header-only database at ``path``, which
    every later opener would refuse as "not a packlab store"; at most a
    ``.<name>.<hex>.creating`` file. A store another process created first is kept."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.creating")
    create_private_file(tmp)
    try:
        con = connect(tmp, "rwc")
        try:
            migrate(con, *schemas)
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
        try:
            os.link(tmp, path)
        except FileExistsError:  # made meanwhile by another process (used) or planted: a
            create_private_file(path)  # symbolic link is refused here as before (O_NOFOLLOW)
    finally:
        remove_store(tmp)


def open_store(store: str | os.PathLike, mode: str = "rwc", schemas: tuple[Schema, ...] = (), *,
               writer: str = "a queue") -> tuple[str, sqlite3.Connection, bool]:
    """Open a store: ``(path, connection, created)``; ``created`` says this call made the
    file (so a constructor that fails later removes it). Raise a PacklabError that says
    why and how to fix, with the file unchanged.

    ``schemas`` are the parts the caller uses: created in a new store, migrated in an old
    one (unless read-only), and each one's ``probe`` table read once. ``writer`` names who
    writes to it, for the error when the file is not writable.

    ``mode`` is SQLite's: ``"rwc"`` creates a missing store (a queue), ``"rw"`` and
    ``"ro"`` (the CLI) need an existing one, so a mistyped path is an error, not a new
    empty database.
    """
    path = store_path(store)
    kind = identify(store, path)
    if kind == "new" and mode != "rwc":
        raise PacklabError(f"store={os.fspath(store)!r}: no queue store at {os.path.abspath(path)}. "
                           "Check the path (--store), or run a JobQueue with that store first.",
                           field="store", value=store)
    hint = "Pass store= a path in a folder you can write, e.g. store='~/packlab.db'."
    folder = os.path.dirname(os.path.abspath(path))
    if mode == "rwc" and not os.path.isdir(folder):
        raise PacklabError(f"store={os.fspath(store)!r}: the folder {folder} does not exist. {hint}",
                           field="store", value=store)
    if mode != "ro" and (not os.access(folder, os.W_OK) or (os.path.exists(path) and not
                                                            os.access(path, os.W_OK))):
        raise PacklabError(f"store={os.fspath(store)!r} ({os.path.abspath(path)}) is not writable, and "
                           f"{writer} writes to its store; packlab left it unchanged. {hint}",
                           field="store", value=store)
    created = kind == "new" and not os.path.exists(path)
    try:
        if created:
            create_whole(path, *schemas)
        elif kind == "new":  # an empty file, e.g. made with touch
            create_private_file(path)
        con = connect(path, mode)
    except (OSError, sqlite3.DatabaseError) as e:
        if created:
            remove_store(path)
        _refused_by_its_filesystem(path, e)
        raise PacklabError(f"store={os.fspath(store)!r} cannot be used as a SQLite database ({e}). "
                           f"{hint}", field="store", value=store) from None
    try:
        if mode != "ro":
            migrate(con, *schemas)
        for s in schemas:
            if s.probe:
                con.execute(f"SELECT 1 FROM {s.probe} LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        con.close()
        if created:
            remove_store(path)
        _refused_by_its_filesystem(path, e)
        raise PacklabError(f"store={os.fspath(store)!r} ({os.path.abspath(path)}) is not a readable "
                           f"queue store ({e}).", field="store", value=store) from None
    return path, con, created


def _refused_by_its_filesystem(path: str, e: BaseException) -> None:
    """Raise a StoreError when ``e`` is the filesystem's doing (full, read-only, I/O
    errors): a state of the machine to fix, not a file to replace."""
    if not failures.row_error(e) and failures.kind(path, e) in (failures.FULL, failures.READ_ONLY,
                                                               failures.IO_ERROR):
        raise failures.store_failure(path, e, "open it") from e


def remove_store(path: str) -> None:
    """Delete a store this process created (and its side files)."""
    for p in (path, path + "-wal", path + "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


__all__ = ["NOT_A_STORE_FIX", "create_whole", "identify", "open_store", "refuse", "remove_store"]
