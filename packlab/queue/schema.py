"""Opening a queue store: its path or URL, the SQLite connection (WAL), the schema, and
the migration that brings a store made by an earlier packlab up to date."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse

from ..errors import PacklabError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, seq INTEGER, key TEXT UNIQUE, fn TEXT, owner TEXT, priority INTEGER,
  deadline REAL, timeout REAL, resources TEXT, retry BLOB, status TEXT, attempts INTEGER,
  submitted REAL, updated REAL, late INTEGER DEFAULT 0, error TEXT, traceback TEXT,
  payload BLOB, result BLOB, has_result INTEGER DEFAULT 0, next_attempt REAL);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS events (job_id TEXT, t REAL, kind TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
"""
#: Columns added after the first release: (name, type). A store made before gets them on
#: open (a read-only opener reads NULL for them instead).
_ADDED = (("next_attempt", "REAL"),)

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


def _connect(path: str, mode: str = "rwc") -> sqlite3.Connection:
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={mode}"
    con = sqlite3.connect(uri, timeout=30, check_same_thread=False, isolation_level=None, uri=True)
    if mode != "ro":
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
    return con


def missing_columns(con: sqlite3.Connection) -> list[tuple[str, str]]:
    """The columns of :data:`_ADDED` this store lacks (a store made by an earlier packlab)."""
    have = {row[1] for row in con.execute("PRAGMA table_info(jobs)")}
    return [(name, kind) for name, kind in _ADDED if name not in have]


def migrate(con: sqlite3.Connection) -> None:
    """Add the columns of :data:`_ADDED` that a store made by an earlier packlab lacks.

    The check and the ``ALTER TABLE`` run in one write transaction, so two processes
    opening an old store at once add each column once.

    Examples
    --------
    >>> con = sqlite3.connect(":memory:", isolation_level=None)
    >>> _ = con.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT)")
    >>> migrate(con); migrate(con)
    >>> [row[1] for row in con.execute("PRAGMA table_info(jobs)")]
    ['id', 'status', 'next_attempt']
    """
    if not missing_columns(con):  # the common case: no write lock taken
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        for name, kind in missing_columns(con):
            con.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def open_checked(store: str | os.PathLike, mode: str = "rwc") -> tuple[str, sqlite3.Connection]:
    """Open the database, or raise a PacklabError that says why and how to fix.

    ``mode`` is SQLite's: ``"rwc"`` creates a missing store (a queue), ``"rw"`` and
    ``"ro"`` (the CLI) need an existing one, so a mistyped path is an error, not a new
    empty database.
    """
    path = store_path(store)
    if mode != "rwc":
        if not os.path.isfile(path):
            raise PacklabError(f"store={os.fspath(store)!r}: no queue store at {os.path.abspath(path)}. "
                               "Check the path (--store), or run a JobQueue with that store first.")
        try:
            con = _connect(path, mode)
            con.execute("SELECT 1 FROM jobs LIMIT 1")
            if mode != "ro":
                migrate(con)
        except sqlite3.DatabaseError as e:
            raise PacklabError(f"store={os.fspath(store)!r} ({os.path.abspath(path)}) is not a readable "
                               f"queue store ({e}).") from None
        return path, con
    folder = os.path.dirname(os.path.abspath(path))
    hint = "Pass store= a path in a folder you can write, e.g. store='~/packlab.db'."
    if not os.path.isdir(folder):
        raise PacklabError(f"store={os.fspath(store)!r}: the folder {folder} does not exist. {hint}")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise PacklabError(f"store={os.fspath(store)!r} is not writable. {hint}")
    try:
        con = _connect(path)
        con.executescript(_SCHEMA)
        migrate(con)
    except sqlite3.DatabaseError as e:
        raise PacklabError(f"store={os.fspath(store)!r} cannot be used as a SQLite database ({e}). "
                           f"{hint}") from None
    return path, con
