"""Dask's fine performance metrics, per span: where the time of a queue's jobs went.

Dask's workers meter every task (``distributed.metrics.context_meter``): seconds on a CPU
(``thread-cpu``), seconds not (``thread-noncpu``: I/O, sleep, locks, the GIL), the
executor's overhead, reading inputs from memory and from the spill disk, spilling;
and send them with their heartbeats, keyed ``("execute", <span id>, <task prefix>,
<activity>, <unit>)``. The scheduler's ``SpansSchedulerExtension`` adds them up per span
(``Span.cumulative_worker_metrics``), and over all spans in
``Scheduler.cumulative_worker_metrics``. packlab reuses those figures instead of
measuring again:

* per queue span (:mod:`packlab.queue.spans`: one per owner and function, so a pipeline's
  stage too), the span's own metrics;
* for the cluster, the scheduler's totals per task prefix (span ``""``), which cover
  plain Dask work too.

:func:`take` copies what changed since the last sample on the scheduler's event loop
(a few small dicts); :func:`rows` turns it into ``tel_fine`` rows on the writer's
thread; :func:`efficiency` reads a store back (a row holds the running total, upserted).

CPU efficiency of a group of tasks is their ``thread-cpu`` seconds over all the seconds
Dask metered while they ran (the ``execute`` seconds): 1 for a task that computes, near
0 for one that sleeps or waits on I/O.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from ..errors import bad_value
from ..queue import spans as _spans
from .queries import stage_of_fn

BY = ("owner", "fn", "stage", "prefix")


def take(scheduler: Any, last: dict[str, dict]) -> list[tuple[str, str | None, str | None, dict]]:
    """``(span, owner, fn, {(prefix, activity, unit): value})`` for every queue span, and
    for the scheduler's totals (span ``""``), whose figures changed since ``last`` (which
    is updated). Runs on the scheduler's event loop: copies only."""
    out = []
    ext = getattr(scheduler, "extensions", {}).get("spans")
    if ext is not None:
        for sp in list(ext.spans_search_by_tag.get(_spans.ROOT, ())):
            who = _spans.parse(sp.name)
            if who is None:
                continue
            # the span's own sum (Span.cumulative_worker_metrics adds its children, none
            # here, and an estimate of idle time that walks every TaskGroup it ever had)
            raw = getattr(sp, "_cumulative_worker_metrics", None)
            if raw is None:
                raw = sp.cumulative_worker_metrics
            m = {k[1:]: v for k, v in raw.items() if len(k) == 4 and k[0] == "execute" and k[1] != "N/A"}
            if m and m != last.get(sp.id):
                last[sp.id] = m
                out.append((sp.id, *who, m))
    total = getattr(scheduler, "cumulative_worker_metrics", {})
    m = {k[1:]: v for k, v in list(total.items()) if type(k) is tuple and len(k) == 4 and k[0] == "execute"}
    if m and m != last.get(""):
        last[""] = m
        out.append(("", None, None, m))
    return out


def rows(cluster: str, now: float, raw: list[tuple]) -> list[tuple]:
    """``tel_fine`` rows from what :func:`take` returned (on the writer's thread); task
    prefixes without the queue spans' words (:func:`packlab.queue.spans.task_name`), the
    totals of one name added up."""
    out = []
    for span, owner, fn, m in raw:
        acc: dict[tuple, float] = {}
        for (prefix, activity, unit), v in m.items():
            k = (_spans.task_name(prefix), activity, unit)
            acc[k] = acc.get(k, 0.0) + float(v)
        out += [(cluster, span, owner, fn, *k, v, now) for k, v in acc.items()]
    return out


def _group(by: str, owner: str | None, fn: str | None, prefix: str,
           stages: dict[str, tuple[str, str]]) -> str | None:
    if by == "owner":
        return owner or ""
    if by == "fn":
        return fn
    if by == "prefix":
        return prefix
    ps = stages.get(fn or "")  # from the jobs' tags (see queries.stage_of_fn)
    return None if ps is None else f"{ps[0]}.{ps[1]}"


def efficiency(con: sqlite3.Connection, where: str, params: tuple, by: str = "fn") -> list[dict[str, Any]]:
    """Per owner, function, pipeline stage (``pipeline.stage``) or task prefix (``by``):
    Dask's metered seconds and CPU efficiency, busiest first (see the module's docstring).

    ``owner``/``fn``/``stage`` read the queue's spans; ``prefix`` the scheduler's totals,
    any Dask work.
    """
    if by not in BY:
        raise bad_value("by", by, f"one of {list(BY)}")
    if con.execute("SELECT 1 FROM sqlite_master WHERE name='tel_fine'").fetchone() is None:
        return []  # a store written before packlab read Dask's fine metrics
    span = "span = ''" if by == "prefix" else "span != ''"
    sql = (f"SELECT owner, fn, prefix, activity, unit, SUM(value) FROM tel_fine WHERE {where} AND {span} "
           "GROUP BY owner, fn, prefix, activity, unit")
    acc: dict[str, dict[str, float]] = {}
    stages = stage_of_fn(con) if by == "stage" else {}
    for owner, fn, prefix, activity, unit, v in con.execute(sql, params):
        g = _group(by, owner, fn, prefix, stages)
        if g is None:
            continue
        a = acc.setdefault(g, {})
        key = activity if unit == "seconds" else f"{activity}:{unit}"
        a[key] = a.get(key, 0.0) + v
        if unit == "seconds":
            a["seconds"] = a.get("seconds", 0.0) + v
    out = []
    for g, a in acc.items():
        secs = a.get("seconds", 0.0)
        cpu = a.get("thread-cpu", 0.0)
        out.append({by: g, "seconds": round(secs, 6), "cpu_seconds": round(cpu, 6),
                    "noncpu_seconds": round(a.get("thread-noncpu", 0.0), 6),
                    "cpu_efficiency": round(cpu / secs, 6) if secs > 0 else math.nan,
                    "disk_seconds": round(a.get("disk-read", 0.0) + a.get("disk-write", 0.0), 6),
                    "memory_read_bytes": int(a.get("memory-read:bytes", 0)),
                    "disk_read_bytes": int(a.get("disk-read:bytes", 0)),
                    "disk_write_bytes": int(a.get("disk-write:bytes", 0))})
    return sorted(out, key=lambda r: -r["seconds"])


__all__ = ["BY", "efficiency", "rows", "take"]
