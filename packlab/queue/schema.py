"""The queue's tables in a packlab store (the store itself, how it is opened and
recognised, is :mod:`packlab.store`'s)."""

from __future__ import annotations

from .. import store

DDL = """
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, seq INTEGER, key TEXT UNIQUE, fn TEXT, owner TEXT, priority INTEGER,
  deadline REAL, timeout REAL, resources TEXT, retry BLOB, status TEXT, attempts INTEGER,
  submitted REAL, updated REAL, late INTEGER DEFAULT 0, error TEXT, traceback TEXT,
  payload BLOB, result BLOB, has_result INTEGER DEFAULT 0, next_attempt REAL, tags TEXT);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_fn ON jobs(fn);
CREATE INDEX IF NOT EXISTS jobs_tags ON jobs(tags) WHERE tags IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (job_id TEXT, t REAL, kind TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
CREATE TABLE IF NOT EXISTS lease (
  one INTEGER PRIMARY KEY CHECK (one = 1), driver TEXT NOT NULL, pid INTEGER, host TEXT,
  started REAL, heartbeat REAL);
CREATE TABLE IF NOT EXISTS requests (job_id TEXT, action TEXT, t REAL);
"""

#: The queue's part of a store. ``added``: columns added after the first release (a store
#: made before gets them on open; a read-only opener reads NULL for them instead).
#: ``legacy``: the columns every queue's ``jobs`` and ``events`` tables have had since the
#: first release, by which a store made before packlab set its application id is known.
QUEUE = store.register(store.Schema(
    name="queue", ddl=DDL, probe="jobs",
    objects=frozenset({"jobs", "events", "lease", "requests", "jobs_fn", "jobs_tags"}),
    added=(("jobs", "next_attempt", "REAL"), ("jobs", "tags", "TEXT")),
    legacy={"jobs": frozenset({"id", "seq", "key", "fn", "owner", "priority", "status", "attempts", "payload",
                               "result"}),
            "events": frozenset({"job_id", "t", "kind", "detail"})},
))

__all__ = ["DDL", "QUEUE"]
