"""What the load benchmark measures from a finished store (pure: SQLite in, numbers out),
and the panel reader it runs in another process. See :mod:`benchmarks.bench_load`."""

from __future__ import annotations

import math
import sqlite3
from collections import Counter

import numpy as np

# Another process drives the panel's data path on the store at its refresh interval, as
# ``packlab dashboard --store`` does: each refresh's time, and whether it saw new data.
PANEL_READER = r"""
import json, os, sys, time
from bokeh.document import Document
from packlab.ui.feed import Feed
from packlab.ui.panel import Panel
store, stop, interval = sys.argv[1], sys.argv[2], float(sys.argv[3])
p = Panel(Feed(store), interval=interval)
doc = Document(); doc.add_root(p.layout)
out, last, late, errors = [], None, 0, []
t_next = time.monotonic()
while not os.path.exists(stop):
    t0 = time.perf_counter()
    try:
        fr = p.refresh()
    except Exception as e:  # a stall or a failure is what this measures: keep going
        errors.append(repr(e)[:200]); time.sleep(interval); continue
    dt = time.perf_counter() - t0
    depth = fr.queue.get("all", ([], []))[0]
    seen = (fr.snapshot.jobs, len(fr.durations[0]), float(depth[-1]) if len(depth) else 0.0)
    out.append([time.time(), dt, last is None or seen != last, fr.snapshot.jobs])
    last = seen
    t_next += interval
    wait = t_next - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    else:
        late += 1; t_next = time.monotonic()
print(json.dumps({"refreshes": out, "late": late, "errors": errors[:3]}))
"""


def integrity(path: str, n: int, executions: Counter) -> dict:
    """``PRAGMA integrity_check``, statuses against events, and executions per job."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        check = con.execute("PRAGMA integrity_check").fetchone()[0]
        statuses = dict(con.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
        done_events = dict(con.execute(
            "SELECT n, COUNT(*) FROM (SELECT job_id, COUNT(*) AS n FROM events WHERE kind='done' "
            "GROUP BY job_id) GROUP BY n").fetchall())
        done_jobs = con.execute("SELECT COUNT(*) FROM jobs WHERE status='done' AND id IN "
                                "(SELECT job_id FROM events WHERE kind='done')").fetchone()[0]
        submitted = con.execute(
            "SELECT COUNT(DISTINCT job_id) FROM events WHERE kind='submitted'").fetchone()[0]
    finally:
        con.close()
    runs = Counter(executions.values())
    ok = (check == "ok" and statuses == {"done": n} and done_events == {1: n} and done_jobs == n
          and submitted == n and len(executions) == n and set(runs) == {1})
    return {"integrity_check": check, "statuses": statuses, "done_events_per_job": done_events,
            "executions_per_job": dict(runs), "ok": ok}


def _queued_owners(con, owners: list[str], grid: np.ndarray) -> np.ndarray:
    """For each owner and each time of ``grid``: jobs queued (submitted, not yet running)."""
    out = np.zeros((len(owners), len(grid)), dtype=np.int64)
    for k, o in enumerate(owners):
        sub = np.array([r[0] for r in con.execute(
            "SELECT t FROM events e JOIN jobs j ON j.id = e.job_id WHERE e.kind='submitted' AND j.owner=?",
            (o,))], dtype=float)
        run = np.array([r[0] for r in con.execute(
            "SELECT MIN(e.t) FROM events e JOIN jobs j ON j.id = e.job_id WHERE e.kind='running' AND "
            "j.owner=? GROUP BY e.job_id", (o,))], dtype=float)
        out[k] = np.searchsorted(np.sort(sub), grid, "right") - np.searchsorted(np.sort(run), grid, "right")
    return out


def fair_share(path: str, weights: dict[str, float], window: float, step: float) -> dict:
    """How closely service followed the weights while every owner had work queued.

    Service is worker-timed run time (the ``done`` event's "attempt N in X s"), spread over
    the interval the attempt ran. Returned: the worst and mean relative deviation
    ``|share - target| / target`` over owners and sliding windows of ``window`` s; the
    same for the whole stretch in which all owners had work queued (``whole``); the
    largest spread of weighted usage (run seconds / weight) between owners over that
    stretch (what the policy keeps small), and the longest single job.
    """
    owners = sorted(weights)
    w = np.array([weights[o] for o in owners], dtype=float)
    target = w / w.sum()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT e.t, j.owner, e.detail FROM events e JOIN jobs j ON j.id = e.job_id "
                           "WHERE e.kind='done' ORDER BY e.t").fetchall()
        end = np.array([r[0] for r in rows])
        idx = {o: k for k, o in enumerate(owners)}
        who = np.array([idx[r[1]] for r in rows])
        secs = np.array([float(r[2].rsplit(" in ", 1)[1].split()[0]) for r in rows])  # "attempt 1 in 0.003 s"
        grid = np.arange(end[0], end[-1], 0.1)
        queued = _queued_owners(con, owners, grid)
    finally:
        con.close()
    start = end - secs
    all_queued = (queued > 0).all(axis=0)
    lo_all, hi_all = (grid[all_queued][0], grid[all_queued][-1]) if all_queued.any() else (0.0, 0.0)

    def served(lo: float, hi: float) -> np.ndarray:
        a, b = np.searchsorted(end, lo), np.searchsorted(end, hi + secs.max())
        part = np.clip(np.minimum(end[a:b], hi) - np.maximum(start[a:b], lo), 0.0, None)
        return np.bincount(who[a:b], weights=part, minlength=len(owners))

    devs = []
    for lo in np.arange(end[0], end[-1] - window, step):
        g = (grid >= lo) & (grid < lo + window)
        if not g.any() or not all_queued[g].all():
            continue
        s = served(lo, lo + window)
        if s.sum() > 0:
            devs.append(np.abs(s / s.sum() - target) / target)
    whole = served(lo_all, hi_all)
    in_stretch = (end >= lo_all) & (end <= hi_all)
    usage = np.zeros(len(owners))
    spread = 0.0
    for k in np.flatnonzero(in_stretch):
        usage[who[k]] += secs[k]
        v = usage / w
        spread = max(spread, float(v.max() - v.min()))
    return {"worst": float(np.max(devs)) if devs else math.nan,
            "mean": float(np.mean(devs)) if devs else math.nan, "windows": len(devs),
            "whole": float((np.abs(whole / whole.sum() - target) / target).max())
            if whole.sum() else math.nan,
            "stretch": float(hi_all - lo_all), "run": float(end[-1] - end[0]), "spread": spread,
            "longest": float(secs.max()), "median": float(np.median(secs))}


def rss_figures(samples: list[tuple[float, int]]) -> dict:
    """Start, peak, end (MiB) and the slope over the second half (MiB per minute)."""
    t = np.array([s[0] for s in samples]) - samples[0][0]
    r = np.array([s[1] for s in samples]) / 2**20
    half = t >= t[-1] / 2
    slope = float(np.polyfit(t[half], r[half], 1)[0] * 60) if half.sum() >= 3 else math.nan
    return {"start": float(r[0]), "peak": float(r.max()), "end": float(r[-1]), "slope": slope}


def panel_figures(res: dict) -> dict:
    rs = res["refreshes"]
    lat = np.array([r[1] for r in rs]) if rs else np.array([math.nan])
    new = [r[2] for r in rs]
    fresh = [r[0] for r in rs if r[2]]
    gap = float(np.max(np.diff(fresh))) if len(fresh) > 1 else math.nan
    return {"n": len(rs), "gap": gap, "p50": float(np.percentile(lat, 50)),
            "p95": float(np.percentile(lat, 95)),
            "max": float(lat.max()), "stale": len(new) - sum(new), "late": res["late"],
            "errors": res["errors"], "first_half_p50": float(np.median(lat[: max(1, len(lat) // 2)])),
            "last_half_p50": float(np.median(lat[len(lat) // 2:]))}
