"""What the monitor and the advisor read from a store: SQL over telemetry's tables.

Every function takes a read connection and a :class:`Scope` (one cluster, or all the
store holds) and aggregates in SQLite, so a store with hundreds of workers and millions
of rows answers in milliseconds; only the recent jobs behind the percentiles and trends
come back to Python.

A *job* is a :class:`packlab.JobQueue` job when the store holds queue events (the queue's
own ``events`` table, with its ``jobs`` for their function: telemetry keeps no copy), else a
Dask task. A worker's cost per second is its :meth:`~.pricing.Pricing.hourly` rate over 3600
(in SQL: :func:`~.pricing.rate_sql`, made from the same terms),
shared by its threads: a task pays its compute time times that rate over the worker's
threads, which is what :func:`~.cost.attribute` charges when no more tasks run at once
than the worker has threads (Dask never runs more).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass

from ..queue.states import ENDED_KINDS, FAILED_KINDS
from ..queue.states import Kind as K
from .pricing import Pricing, rate_sql

#: Job events after which a job is finished, and those of them that mean it failed.
ENDS = ENDED_KINDS
FAILED_ENDS = FAILED_KINDS
RECENT = 2000  # jobs behind the percentiles and trends


@dataclass(frozen=True)
class Scope:
    """Which rows to read: one cluster's (``cluster``) or all; ``now`` ends a worker
    still held (``None``: its last sample)."""

    cluster: str | None = None
    now: float | None = None

    def where(self, alias: str = "") -> tuple[str, tuple]:
        col = f"{alias}.cluster" if alias else "cluster"
        return ("1=1", ()) if self.cluster is None else (f"{col}=?", (self.cluster,))


def _end(scope: Scope) -> str:
    return "COALESCE(w.stop, w.seen)" if scope.now is None else "COALESCE(w.stop, ?)"


def has_queue(con: sqlite3.Connection) -> bool:
    """Whether the store holds a queue's job events."""
    try:
        return con.execute("SELECT 1 FROM events LIMIT 1").fetchone() is not None
    except sqlite3.OperationalError:  # a file without the queue's tables
        return False


def held(con: sqlite3.Connection, scope: Scope, pricing: Pricing) -> tuple[float, float, float]:
    """``(cost of every worker held, thread-seconds held, workers held now)``."""
    rate, rp = rate_sql(pricing)
    where, wp = scope.where("w")
    now = () if scope.now is None else (scope.now,)
    end = _end(scope)
    row = con.execute(f"SELECT SUM({rate} * ({end} - w.start)), SUM(w.threads * ({end} - w.start)), "
                      f"SUM(w.stop IS NULL) FROM tel_workers w WHERE {where}",
                      (*rp, *now, *now, *wp)).fetchone()
    return (row[0] or 0.0, row[1] or 0.0, row[2] or 0)


def busy(con: sqlite3.Connection, scope: Scope, pricing: Pricing) -> tuple[float, float, int, int]:
    """``(cost of task time, task thread-seconds, tasks, tasks erred)``, from the per-worker
    totals the plugin keeps (``tel_workers.busy/tasks/erred``): no scan of the tasks."""
    rate, rp = rate_sql(pricing)
    where, wp = scope.where("w")
    row = con.execute(f"SELECT SUM(w.busy * {rate} / w.threads), SUM(w.busy), SUM(w.tasks), SUM(w.erred) "
                      f"FROM tel_workers w WHERE {where}", (*rp, *wp)).fetchone()
    return (row[0] or 0.0, row[1] or 0.0, row[2] or 0, row[3] or 0)


@dataclass(frozen=True)
class Jobs:
    """Finished jobs: how many, failed, done since ``today``, and the most recent ones as
    ``(end, seconds, failed, cost)`` rows, oldest first."""

    finished: int
    failed: int
    done_today: int
    recent: list[tuple[float, float, bool, float]]


def _midnight() -> float:
    t = time.localtime()
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


_ENDS_SQL = ",".join(f"'{k}'" for k in ENDS)
_FAILS_SQL = ",".join(f"'{k}'" for k in FAILED_ENDS)


class EndCounts:
    """Finished, failed and done-today queue jobs of a store, kept by reading only the
    queue's ``events`` rows added since the last call (the table is append-only), so a panel
    reading every second does not count every job ever run each time.

    A job counts once however many end events it has (requeued, it ends again): a new
    end row counts only if its job has no earlier one (an index lookup per new row).

    Examples
    --------
    >>> con = sqlite3.connect(":memory:")
    >>> _ = con.execute("CREATE TABLE events (job_id, t, kind, detail)")
    >>> _ = con.execute("CREATE INDEX events_job ON events(job_id)")
    >>> rows = [(1, "a", "dead"), (2, "a", "requeued"), (3, "a", "done"), (4, "b", "done")]
    >>> _ = con.executemany("INSERT INTO events (t, job_id, kind) VALUES (?,?,?)", rows)
    >>> c = EndCounts()
    >>> c.update(con, today=0.0)
    (2, 1, 2)
    >>> _ = con.execute("INSERT INTO events (t, job_id, kind) VALUES (5, 'c', 'cancelled')")
    >>> c.update(con, today=0.0)
    (3, 1, 2)
    """

    # each new end row: is it its job's first end, first failed end, first done today?
    _NEW = ("SELECT SUM(NOT EXISTS (SELECT 1 FROM events r WHERE r.job_id = e.job_id AND r.rowid < e.rowid "
            f"  AND r.kind IN ({_ENDS_SQL}))), "
            f"SUM(e.kind IN ({_FAILS_SQL}) AND NOT EXISTS (SELECT 1 FROM events r WHERE r.job_id = e.job_id "
            f"  AND r.rowid < e.rowid AND r.kind IN ({_FAILS_SQL}))), "
            f"SUM(e.kind = '{K.DONE}' AND e.t >= ? AND NOT EXISTS (SELECT 1 FROM events r "
            f"  WHERE r.job_id = e.job_id AND r.rowid < e.rowid AND r.kind = '{K.DONE}' AND r.t >= ?)) "
            f"FROM events e WHERE e.rowid > ? AND e.rowid <= ? AND e.kind IN ({_ENDS_SQL})")
    _ALL = ("SELECT COUNT(DISTINCT job_id), "
            f"COUNT(DISTINCT CASE WHEN kind IN ({_FAILS_SQL}) THEN job_id END), "
            f"COUNT(DISTINCT CASE WHEN kind='{K.DONE}' AND t >= ? THEN job_id END) FROM events "
            f"WHERE kind IN ({_ENDS_SQL}) AND rowid <= ?")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last, self._today = 0, None
        self._counts = (0, 0, 0)

    def update(self, con: sqlite3.Connection, today: float | None = None) -> tuple[int, int, int]:
        """``(finished, failed, done since today)`` now; ``today`` defaults to local midnight."""
        today = _midnight() if today is None else today
        with self._lock:
            top = con.execute("SELECT MAX(rowid) FROM events").fetchone()[0] or 0
            if today != self._today or top < self._last:  # a new day (or another store): count again
                self._last, self._today, self._counts = 0, today, (0, 0, 0)
            if top == self._last:
                return self._counts
            if self._last == 0:  # the first read: one pass over every end row
                row = con.execute(self._ALL, (today, top)).fetchone()
            else:
                row = con.execute(self._NEW, (today, today, self._last, top)).fetchone()
            self._counts = tuple(a + (b or 0) for a, b in zip(self._counts, row, strict=True))
            self._last = top
            return self._counts


def recent(con: sqlite3.Connection, scope: Scope, pricing: Pricing) -> list[tuple[float, float, bool, float]]:
    """The most recent (up to :data:`RECENT`) finished jobs as ``(end, seconds, failed,
    cost)`` rows, oldest first: what the percentiles, trends and job metrics need."""
    return jobs(con, scope, pricing, counts=False).recent


def jobs(con: sqlite3.Connection, scope: Scope, pricing: Pricing, counts: EndCounts | bool = True) -> Jobs:
    """The finished jobs (queue jobs when the store has queue events, else tasks).

    ``counts``: an :class:`EndCounts` to count queue jobs with (a monitor keeps one, so
    each count reads only new rows), ``True`` for a fresh count, ``False`` for none (the
    counts are 0 and only ``recent`` is read).
    """
    rate, rp = rate_sql(pricing)
    today = _midnight()
    if not has_queue(con):
        _, _, n, failed = busy(con, scope, pricing)
        where, wp = scope.where("t")
        if counts is False:
            done_today = 0
        else:
            first = con.execute("SELECT MIN(stop) FROM tel_tasks").fetchone()[0]
            if first is not None and first >= today:  # every task ended today: no need to count them
                done_today = n - failed
            else:
                done_today = con.execute("SELECT COUNT(*) FROM tel_tasks t WHERE stop >= ? AND "
                                         f"outcome = 'memory' AND {where}", (today, *wp)).fetchone()[0]
        rows = con.execute(
            f"SELECT t.stop, t.stop - t.start, t.outcome = 'erred', (t.stop - t.start) * {rate} / w.threads "
            "FROM tel_tasks t JOIN tel_workers w ON w.cluster = t.cluster AND w.worker = t.worker "
            f"WHERE {where} ORDER BY t.stop DESC LIMIT {RECENT}", (*rp, *wp)).fetchall()
        recent = [(a, b, bool(c), d) for a, b, c, d in rows[::-1]]
        return Jobs(n, failed, done_today or 0, recent)
    if counts is False:
        n, failed, done_today = 0, 0, 0
    else:
        n, failed, done_today = (EndCounts() if counts is True else counts).update(con, today)
    # the latest ends in the order the queue wrote them (the table is append-only)
    rows = con.execute(
        "SELECT e.job_id, e.t, e.kind, (SELECT MAX(r.t) FROM events r WHERE r.job_id = e.job_id AND "
        f"r.kind = '{K.RUNNING}' AND r.t <= e.t) FROM events e WHERE e.kind IN ({_ENDS_SQL}) "
        f"ORDER BY e.rowid DESC LIMIT {RECENT}").fetchall()
    where, wp = scope.where("t")
    ids = sorted({r[0] for r in rows})
    ran = {job: (secs, cost) for job, secs, cost in con.execute(
        f"SELECT t.job, SUM(t.stop - t.start), SUM((t.stop - t.start) * {rate} / w.threads) FROM tel_tasks t "
        "JOIN tel_workers w ON w.cluster = t.cluster AND w.worker = t.worker WHERE t.job IN "
        f"({','.join('?' * len(ids))}) AND {where} GROUP BY t.job", (*rp, *ids, *wp))}
    # a job's duration is its compute time on workers (all attempts) where its tasks were
    # seen, else the time from its last start to its end in the queue's events
    recent = [(t, ran[job][0] if job in ran else (t - run if run is not None else 0.0), kind in FAILED_ENDS,
               ran.get(job, (0.0, 0.0))[1]) for job, t, kind, run in rows[::-1] if kind != "cancelled" or run]
    return Jobs(n or 0, failed or 0, done_today or 0, recent)


def service_units(con: sqlite3.Connection, scope: Scope) -> float | None:
    """SLURM service units of the worker jobs (billing x elapsed hours); ``None`` when no
    worker job's billing was read (not a SLURM cluster)."""
    where, wp = scope.where()
    row = con.execute(f"SELECT SUM(billing * elapsed / 3600.0), COUNT(billing) FROM tel_slurm WHERE {where}",
                      wp).fetchone()
    return row[0] if row[1] else None


def latest(con: sqlite3.Connection, metric: str, source: str = "") -> float | None:
    """The latest sample of ``metric`` from ``source`` (``""``: the cluster), or ``None``."""
    row = con.execute("SELECT value FROM tel_samples WHERE metric=? AND source=? ORDER BY t DESC LIMIT 1",
                      (metric, source)).fetchone()
    return None if row is None else row[0]


def maxima(con: sqlite3.Connection, metrics: tuple[str, ...]) -> dict[tuple[str, str], float]:
    """``{(source, metric): highest value}`` for per-worker ``metrics``."""
    marks = ",".join("?" * len(metrics))
    return {(s, m): v for s, m, v in con.execute(
        f"SELECT source, metric, MAX(value) FROM tel_samples WHERE metric IN ({marks}) AND source != '' "
        "GROUP BY source, metric", metrics)}


__all__ = ["ENDS", "FAILED_ENDS", "EndCounts", "Jobs", "Scope", "busy", "has_queue", "held", "jobs", "latest",
           "maxima", "recent", "service_units"]


def _has_tags(con: sqlite3.Connection) -> bool:
    """False for a store from before jobs carried tags, opened read-only (never migrated)."""
    return "tags" in {r[1] for r in con.execute("PRAGMA table_info(jobs)")}


def pipeline_stages(con: sqlite3.Connection) -> list[tuple]:
    """Per pipeline stage (its jobs carry the tags ``{"pipeline": ..., "stage": ...}``: see
    :class:`packlab.Pipeline`): ``(pipeline, stage)``, units done, failed for good, retries,
    worker-seconds its attempts took, first and last event time; oldest stage first.

    A fan-out stage's elements are its units (one queue job each); a stage reused from its
    checkpoint runs no job, so it is not here. A store written before jobs carried tags has
    none.
    """
    if not _has_tags(con):
        return []
    rows = con.execute(
        f"SELECT j.tags, COUNT(DISTINCT CASE WHEN e.kind='{K.DONE}' THEN e.job_id END), "
        f"COUNT(DISTINCT CASE WHEN e.kind IN {FAILED_ENDS!r} THEN e.job_id END), "
        f"SUM(e.kind='{K.RETRYING}'), "
        "(SELECT COALESCE(SUM(t.stop - t.start), 0) FROM tel_tasks t WHERE t.job IN "
        "   (SELECT id FROM jobs WHERE tags = j.tags)), MIN(e.t), MAX(e.t) "
        "FROM jobs j JOIN events e ON e.job_id = j.id "
        "WHERE j.tags IS NOT NULL "  # by the partial index jobs_tags
        "GROUP BY j.tags ORDER BY MIN(e.t)").fetchall()
    out = []
    for tags, *counts in rows:
        t = json.loads(tags)
        if "pipeline" in t:
            out.append(((t["pipeline"], t.get("stage", "")), *counts))
    return out


def stage_of_fn(con: sqlite3.Connection) -> dict[str, tuple[str, str]]:
    """``(pipeline, stage)`` by job function name, from the jobs' tags (for Dask's metrics,
    which know a job's function, not its tags)."""
    if not _has_tags(con):
        return {}
    out = {}
    for fn, tags in con.execute("SELECT DISTINCT fn, tags FROM jobs WHERE tags IS NOT NULL"):
        t = json.loads(tags)
        if "pipeline" in t:
            out[fn] = (t["pipeline"], t.get("stage", ""))
    return out
