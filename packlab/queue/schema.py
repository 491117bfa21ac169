"""The queue's SQLite file: its one DDL, the one way to connect, the one transaction
block, and how a store is created and recognised.

A store is created owner-only (0600) before SQLite opens it, so its ``-wal`` and
``-shm`` side files, which SQLite creates with the main file's mode, are owner-only too:
they hold every job's pickled function, arguments and result. A symbolic link is never
followed. A file that is not a packlab store (another application's SQLite database,
someone else's ``jobs`` table, garbage, a file we may not write) is refused before a
single byte of it changes: it is recognised from its header and schema, read without
locks or side files (SQLite's ``immutable`` mode).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import urllib.parse
import uuid
from collections.abc import Iterator

from ..errors import PacklabError
from . import failures

#: ``PRAGMA application_id`` of a packlab store ("PKLB"): how a store is recognised.
APPLICATION_ID = 0x504B4C42

DDL = f"""
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, seq INTEGER, key TEXT UNIQUE, fn TEXT, owner TEXT, priority INTEGER,
  deadline REAL, timeout REAL, resources TEXT, retry BLOB, status TEXT, attempts INTEGER,
  submitted REAL, updated REAL, late INTEGER DEFAULT 0, error TEXT, traceback TEXT,
  payload BLOB, result BLOB, has_result INTEGER DEFAULT 0, next_attempt REAL);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_fn ON jobs(fn);
CREATE TABLE IF NOT EXISTS events (job_id TEXT, t REAL, kind TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE TABLE IF NOT EXISTS lease (
  one INTEGER PRIMARY KEY CHECK (one = 1), driver TEXT NOT NULL, pid INTEGER, host TEXT,
  started REAL, heartbeat REAL);
CREATE TABLE IF NOT EXISTS requests (job_id TEXT, action TEXT, t REAL);
PRAGMA application_id = {APPLICATION_ID};
"""
#: Columns added after the first release: (name, type). A store made before gets them on
#: open (a read-only opener reads NULL for them instead).
ADDED = (("next_attempt", "REAL"),)
#: The columns every packlab store's ``jobs`` table has had since the first release.
_CORE = frozenset(("id", "seq", "key", "fn", "owner", "priority", "status", "attempts", "payload", "result"))


def connect(path: str, mode: str = "rw", immutable: bool = False) -> sqlite3.Connection:
    """The one way packlab connects to a store: autocommit (transactions are explicit,
    see :func:`transaction`), usable from any thread, a 30 s busy timeout, and for a
    writer WAL with ``synchronous=NORMAL`` (durable across a process crash).

    Examples
    --------
    >>> import tempfile
    >>> con = connect(os.path.join(tempfile.mkdtemp(), "x.db"), mode="rwc")
    >>> con.execute("PRAGMA journal_mode").fetchone()[0]
    'wal'
    """
    query = f"mode={mode}" + ("&immutable=1" if immutable else "")
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?{query}"
    con = sqlite3.connect(uri, timeout=30, check_same_thread=False, isolation_level=None, uri=True)
    if mode != "ro":
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
    return con


@contextlib.contextmanager
def transaction(con: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """``BEGIN [IMMEDIATE]`` ... ``COMMIT``, rolled back if the block raises.

    ``immediate`` takes the write lock at once, so what the block reads cannot change
    before it commits (a check and its write in one step).

    Examples
    --------
    >>> con = sqlite3.connect(":memory:", isolation_level=None)
    >>> with transaction(con):
    ...     _ = con.execute("CREATE TABLE t (x)")
    """
    con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield con
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def store_path(store: str | os.PathLike) -> str:
    """The file path of a store given as a path or a SQLAlchemy-style URL
    (``sqlite:///relative.db``, ``sqlite:////absolute/path.db``).

    Examples
    --------
    >>> store_path("sqlite:////tmp/q.db"), store_path("sqlite:///q.db"), store_path("q.db")
    ('/tmp/q.db', 'q.db', 'q.db')
    """
    if not isinstance(store, (str, os.PathLike)):
        raise PacklabError(f"store={store!r} is invalid: expected a file path or a sqlite:///path URL.",
                           field="store", value=store)
    s = os.fspath(store)
    if not isinstance(s, str) or not s.strip():
        raise PacklabError(f"store={store!r} is invalid: expected a file path or a sqlite:///path URL.",
                           field="store", value=store)
    if "://" in s:
        scheme, _, rest = s.partition("://")
        if scheme != "sqlite":
            raise PacklabError(
                f"store={s!r} is not supported: the queue's store is SQLite; give a file path "
                "or a sqlite:///path URL.", field="store", value=store)
        s = rest[1:] if rest.startswith("/") else rest
    return os.path.expanduser(s)


def missing_columns(con: sqlite3.Connection) -> list[tuple[str, str]]:
    """The columns of :data:`ADDED` this store lacks (a store made by an earlier packlab)."""
    have = {row[1] for row in con.execute("PRAGMA table_info(jobs)")}
    return [(name, kind) for name, kind in ADDED if name not in have]


def migrate(con: sqlite3.Connection) -> None:
    """Bring a packlab store up to date: the tables and columns added since it was made.

    The check and the change run in one write transaction, so two processes opening an
    old store at once change it once.

    Examples
    --------
    >>> con = sqlite3.connect(":memory:", isolation_level=None)
    >>> _ = con.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, fn TEXT, status TEXT)")
    >>> migrate(con); migrate(con)
    >>> [row[1] for row in con.execute("PRAGMA table_info(jobs)")]
    ['id', 'fn', 'status', 'next_attempt']
    """
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    if not missing_columns(con) and {"jobs", "events", "lease", "requests", "jobs_fn"} <= tables and \
            con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
        return  # the common case: no write lock taken
    with transaction(con):
        for stmt in DDL.split(";"):
            if stmt.strip():
                con.execute(stmt)
        for name, kind in missing_columns(con):
            con.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")


def _refuse(store: object, path: str, what: str, fix: str) -> PacklabError:
    return PacklabError(f"store={os.fspath(store)!r} ({os.path.abspath(path)}) {what}; packlab left it "
                        f"unchanged. {fix}", field="store", value=store)


_OTHER = "Pass store= a new file name (or a packlab store), e.g. store='~/packlab.db'."


def identify(store: object, path: str) -> str:
    """What the file at ``path`` is: ``"new"`` (absent or empty) or ``"packlab"``; any
    other file raises a PacklabError saying what it is. Reads, never writes, and follows
    no symbolic link (one in its place, or its side files', is refused)."""
    for p in (path, path + "-wal", path + "-shm"):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # absent
            if stat.S_ISLNK(os.lstat(p).st_mode):
                raise _refuse(store, path, f"has a symbolic link at {p}",
                              "packlab never follows one (it could point anywhere); remove it or pass "
                              "store= a real file.")
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # absent (a parent is a file: said on creation)
        return "new"
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(store, path, "is not a regular file", _OTHER)
    if st.st_size == 0:
        return "new"
    # Never open() the file from Python: closing any descriptor of a file drops every POSIX
    # lock this process holds on it, SQLite's included (a live queue's in this process), and
    # another process may then reset its WAL under it. SQLite's own connections share its
    # locks, so the header (application_id) is read through one.
    if not os.access(path, os.R_OK):
        raise _refuse(store, path, "cannot be read (permission denied)", "Check its permissions.")
    wal = os.path.exists(path + "-wal")
    try:
        con = connect(path, mode="ro", immutable=not wal)
        try:
            try:
                app = con.execute("PRAGMA application_id").fetchone()[0]
            except sqlite3.DatabaseError:
                raise _refuse(store, path, "is not an SQLite database (its first bytes are not SQLite's "
                              "header)", _OTHER) from None
            if app == APPLICATION_ID:
                return "packlab"
            if app != 0:
                raise _refuse(store, path, f"is the SQLite database of another application (application_id "
                              f"{app:#x})", _OTHER)
            # application_id 0: a store made before packlab set one, or anyone's database.
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            cols = {r[1] for r in con.execute("PRAGMA table_info(jobs)")}
            ev = {r[1] for r in con.execute("PRAGMA table_info(events)")}
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise _refuse(store, path, f"is not a readable SQLite database ({e})", _OTHER) from None
    if "jobs" in tables and _CORE <= cols and {"job_id", "t", "kind", "detail"} <= ev:
        return "packlab"
    if "jobs" in tables:
        raise _refuse(store, path, f"is an SQLite database whose 'jobs' table is not a packlab queue's "
                      f"(columns {sorted(cols)})", _OTHER)
    names = ", ".join(sorted(tables)[:5]) or "none"
    raise _refuse(store, path, f"is an SQLite database that is not a packlab store (tables: {names})",
                  _OTHER)


def create_private(path: str) -> None:
    """Create ``path`` empty and owner-only (0600), refusing a symlink planted there.
    An existing empty file (e.g. made with ``touch``) is made owner-only instead."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
        try:
            if os.fstat(fd).st_size == 0:
                os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        return
    os.close(fd)


def create_whole(path: str) -> None:
    """Create the store ``path`` with its schema, whole or not at all: the schema is
    written to a private file beside it, checkpointed out of its WAL, and hard-linked into
    place. A process killed while creating a store (SIGKILL between SQLite writing its
    header and the schema's commit) so leaves no header-only database at ``path``, which
    every later opener would refuse as "not a packlab store"; at most a
    ``.<name>.<hex>.creating`` file. A store another process created first is kept."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.creating")
    create_private(tmp)
    try:
        con = connect(tmp, "rwc")
        try:
            migrate(con)
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
        try:
            os.link(tmp, path)
        except FileExistsError:  # made meanwhile by another process (used) or planted: a
            create_private(path)  # symbolic link is refused here as before (O_NOFOLLOW)
    finally:
        remove_store(tmp)


def private_dir(path: str) -> str:
    """Create the folder ``path`` (and missing parents) owner-only (0700) if it is missing;
    refuse a symbolic link in its place. Returns ``path``."""
    if os.path.islink(path):
        raise PacklabError(f"{path} is a symbolic link: packlab never follows one for its own files; "
                           "remove it.", field="store", value=path)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def open_store(store: str | os.PathLike, mode: str = "rwc") -> tuple[str, sqlite3.Connection, bool]:
    """Open a store: ``(path, connection, created)``; ``created`` says this call made the
    file (so a constructor that fails later removes it). Raise a PacklabError that says
    why and how to fix, with the file unchanged.

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
        raise PacklabError(f"store={os.fspath(store)!r} ({os.path.abspath(path)}) is not writable, and a "
                           f"queue writes to its store; packlab left it unchanged. {hint}",
                           field="store", value=store)
    created = kind == "new" and not os.path.exists(path)
    try:
        if created:
            create_whole(path)
        elif kind == "new":  # an empty file, e.g. made with touch
            create_private(path)
        con = connect(path, mode)
    except (OSError, sqlite3.DatabaseError) as e:
        if created:
            remove_store(path)
        _refused_by_its_filesystem(path, e)
        raise PacklabError(f"store={os.fspath(store)!r} cannot be used as a SQLite database ({e}). "
                           f"{hint}", field="store", value=store) from None
    try:
        if mode != "ro":
            migrate(con)
        con.execute("SELECT 1 FROM jobs LIMIT 1").fetchall()
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
