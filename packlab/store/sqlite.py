"""The one way packlab talks to SQLite: its connection policy, its transaction block, and
how a store is named (a path or a ``sqlite:///`` URL)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator

from ..errors import PacklabError


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


__all__ = ["connect", "store_path", "transaction"]
