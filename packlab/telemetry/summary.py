"""``packlab.advise``: the advisor's rules over what a store recorded.

:func:`run_summary` turns a monitor's store into the advisor's
:class:`~.usage.RunSummary` (per worker: cores, memory, time held, CPU seconds, memory
peak, bytes spilled, how long it has been idle; the tasks and the longest; the queue's
submissions and retries), and :func:`advise` runs :func:`~.advisor.findings` over it.

Examples
--------
>>> import packlab, tempfile, os
>>> store = os.path.join(tempfile.mkdtemp(), "t.db")
>>> with packlab.launch(workers=2, cores=1, memory="1GiB", wait=True, store=store) as pc:
...     _ = pc.client.submit(sum, [1, 2]).result()
>>> "too-small-for-a-cluster" in [f.name for f in packlab.advise(store)]
True
"""

from __future__ import annotations

import time
from typing import Any

from ..queue.states import Kind as K
from . import fine
from .advisor import Finding, findings
from .monitor import Monitor, monitor
from .queries import has_queue, latest, maxima
from .usage import RunSummary, Thresholds, WorkerUsage


def run_summary(m: Monitor) -> RunSummary:
    """What the advisor reads, from ``m``'s store (see the module's docstring)."""
    now = time.time()
    live = m.live
    tel = m._telemetry
    if tel is not None and tel.jobs is not None:
        tel.jobs.poll(tel.store)  # the worker jobs' states now, not as of the last poll
    with m._read() as con:
        scope = m._scope()
        where, wp = scope.where("w")
        workers = con.execute(
            "SELECT w.worker, w.threads, w.memory, w.gpus, w.start, "
            f"COALESCE(w.stop, {'?' if live else 'w.seen'}), (SELECT MAX(t.stop) FROM tel_tasks t "
            "WHERE t.cluster = w.cluster AND t.worker = w.worker) "
            f"FROM tel_workers w WHERE {where}", ((now,) if live else ()) + wp).fetchall()
        peaks = maxima(con, ("cpu_seconds", "memory_peak", "spilled"))
        gpu_use = dict(con.execute("SELECT source, AVG(value) FROM tel_samples WHERE metric='gpu' "
                                   "GROUP BY source").fetchall())
        where_t, tp = scope.where()
        n, secs = con.execute(f"SELECT COUNT(*), SUM(stop - start) FROM tel_tasks WHERE {where_t}",
                              tp).fetchone()
        longest = con.execute(f"SELECT prefix, stop - start FROM tel_tasks WHERE {where_t} "
                              "ORDER BY stop - start DESC LIMIT 1", tp).fetchone()
        clusters = con.execute(f"SELECT MIN(started), MAX(COALESCE(stopped, seen)) FROM tel_clusters WHERE "
                               f"{where_t}", tp).fetchone()
        submissions = retries = 0
        delays: list[float] = []
        if has_queue(con):
            submissions = con.execute(
                f"SELECT COUNT(*) FROM events WHERE kind='{K.SUBMITTED}'").fetchone()[0]
            rows = con.execute(  # each retry: from the failed attempt to the next start
                "SELECT e.t - (SELECT MAX(f.t) FROM events f WHERE f.job_id = e.job_id AND "
                f"f.kind = '{K.FAILED}' AND f.t <= e.t) FROM events e WHERE e.kind = '{K.RUNNING}' AND "
                f"EXISTS (SELECT 1 FROM events f WHERE f.job_id = e.job_id AND f.kind = '{K.FAILED}' "
                "AND f.t <= e.t)").fetchall()
            delays = [max(0.0, r[0]) for r in rows if r[0] is not None]
            retries = len(delays)
        depth = int(latest(con, "queue_depth") or 0)
        # Dask's own figures: per queue function where the queue's spans hold them, else per prefix
        functions = fine.efficiency(con, where_t, tp, "fn") or fine.efficiency(con, where_t, tp, "prefix")
        slurm = con.execute(
            "SELECT s.job_id, s.state, s.elapsed, s.submitted, s.seen, w.worker FROM tel_slurm s LEFT JOIN "
            "tel_workers w ON w.cluster = s.cluster AND w.name = s.worker AND w.stop IS NULL "
            f"WHERE {where_t.replace('cluster', 's.cluster')}", tp).fetchall() if live else []
    usage = []
    for name, threads, memory, gpus, start, end, last_task in workers:
        held = max(0.0, (end or start) - start)
        usage.append(WorkerUsage(
            name=name, cores=max(1, threads or 1), memory=max(1, memory or 1), held_seconds=held,
            cpu_seconds=peaks.get((name, "cpu_seconds"), 0.0),
            memory_peak=peaks.get((name, "memory_peak"), 0.0),
            spilled_bytes=peaks.get((name, "spilled"), 0.0),
            gpus=max(gpus or 0, int(name in gpu_use)), gpu_utilisation=gpu_use.get(name),
            idle_seconds=max(0.0, (end or start) - max(start, last_task or start))))
    jobs: dict[str, dict] = {}
    for jid, state, elapsed, submitted, seen, worker in slurm:
        state = "RUNNING" if state in ("RUNNING", "CONFIGURING") else state
        if state not in ("RUNNING", "PENDING"):
            continue
        secs = elapsed if state == "RUNNING" else max(0.0, now - (submitted or seen))
        j = jobs.setdefault(jid, {"job_id": jid, "state": state, "seconds": secs or 0.0, "workers": []})
        if worker:
            j["workers"].append(worker)
    tel = m._telemetry
    queue_running = bool(live and tel is not None and any(not r._stop.is_set() for r in tel.queues))
    lo, hi = clusters if clusters and clusters[0] is not None else (now, now)
    return RunSummary(
        wall_seconds=max(0.0, (now if live else hi) - lo), workers=tuple(usage), tasks=n or 0,
        task_seconds=secs or 0.0, longest_task=longest[0] if longest else "",
        longest_task_seconds=longest[1] if longest else 0.0, submissions=submissions, retries=retries,
        retry_delays=tuple(delays), queue_running=queue_running,
        alert_sinks=len(tel.sinks) if tel is not None else len(m.sinks), queue_depth=depth,
        slurm_jobs=tuple(jobs.values()),
        functions=tuple({"name": f.get("fn", f.get("prefix")) or "?", "seconds": f["seconds"],
                         "cpu_seconds": min(f["cpu_seconds"], f["seconds"])} for f in functions))


def advise(monitor_or_store: Any, thresholds: Thresholds | None = None) -> list[Finding]:
    """The advisor's findings (:data:`~.advisor.RULES`) for a monitor, a cluster or a store,
    most severe first; each with its evidence in numbers and a line to paste.

    ``thresholds`` default to ``packlab.telemetry.advisor``.
    """
    m = monitor_or_store if isinstance(monitor_or_store, Monitor) else monitor(monitor_or_store)
    return findings(run_summary(m), thresholds)


__all__ = ["advise", "run_summary"]
