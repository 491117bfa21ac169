"""The parts of a packlab store: each package that keeps tables in the file (the queue,
telemetry) describes them as one :class:`Schema` and registers it; this layer creates,
migrates and recognises them without knowing what they hold.

A store is one SQLite file marked with ``PRAGMA application_id`` :data:`APPLICATION_ID`.
A file made before packlab set that id is still recognised, by the tables and columns a
registered schema names as its ``legacy`` signature.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field

from .sqlite import transaction

#: ``PRAGMA application_id`` of a packlab store ("PKLB"): how a store is recognised.
APPLICATION_ID = 0x504B4C42


@dataclass(frozen=True)
class Schema:
    """One package's tables in a packlab store.

    Parameters
    ----------
    name : str
        What the part is, in a user's words (``"queue"``): it names the part in errors.
    ddl : str
        ``CREATE ... IF NOT EXISTS`` statements, separated by ``;``.
    objects : frozenset of str
        The tables and indexes a store that is up to date has: while any is missing, the
        DDL runs again (in a write transaction) when the store is opened for writing.
    added : tuple of (table, column, type)
        Columns added after the part's first release: a store made before gets them on open.
    legacy : mapping of table to columns
        How a store made before packlab set its application id is recognised as this
        part's: each table has at least these columns.
    probe : str or None
        A table read once when the store is opened (a file that cannot serve it is refused).

    Examples
    --------
    >>> s = Schema("notes", "CREATE TABLE IF NOT EXISTS notes (t REAL)", objects=frozenset({"notes"}))
    >>> con = sqlite3.connect(":memory:", isolation_level=None)
    >>> migrate(con, s); [r[0] for r in con.execute("SELECT name FROM sqlite_master")]
    ['notes']
    """

    name: str
    ddl: str
    objects: frozenset[str] = frozenset()
    added: tuple[tuple[str, str, str], ...] = ()
    legacy: Mapping[str, frozenset[str]] = field(default_factory=dict)
    probe: str | None = None


_REGISTERED: dict[str, Schema] = {}


def register(schema: Schema) -> Schema:
    """Make ``schema`` known to :func:`~.identify.identify` (its legacy signature) and
    return it, so a module can write ``QUEUE = register(Schema(...))``."""
    _REGISTERED[schema.name] = schema
    return schema


def registered() -> tuple[Schema, ...]:
    """Every schema registered so far."""
    return tuple(_REGISTERED.values())


def missing_columns(con: sqlite3.Connection, schema: Schema) -> list[tuple[str, str, str]]:
    """The columns of ``schema.added`` this store lacks (a store made by an earlier packlab)."""
    have: dict[str, set[str]] = {}
    out = []
    for table, name, kind in schema.added:
        if table not in have:
            have[table] = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
        if name not in have[table]:
            out.append((table, name, kind))
    return out


def _up_to_date(con: sqlite3.Connection, schemas: tuple[Schema, ...]) -> bool:
    objects = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")}
    return (con.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID and
            all(s.objects <= objects and not missing_columns(con, s) for s in schemas))


def migrate(con: sqlite3.Connection, *schemas: Schema) -> None:
    """Bring a store up to date with ``schemas``: their tables, indexes and added columns,
    and packlab's application id.

    The check and the change run in one write transaction, so two processes opening an
    old store at once change it once; a store already up to date takes no write lock.
    """
    if _up_to_date(con, schemas):
        return  # the common case: no write lock taken
    with transaction(con):
        for s in schemas:
            stmts = [st.strip() for st in s.ddl.split(";") if st.strip()]
            tables = [st for st in stmts if st.upper().startswith("CREATE TABLE")]
            for stmt in tables:  # tables, then the columns an old store lacks, then indexes (on them)
                con.execute(stmt)
            for table, name, kind in missing_columns(con, s):
                con.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            for stmt in stmts:
                if stmt not in tables:
                    con.execute(stmt)
        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")


__all__ = ["APPLICATION_ID", "Schema", "migrate", "missing_columns", "register", "registered"]
