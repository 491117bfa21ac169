"""``packlab.monitor``: the five pack metrics, history and alerts, from a cluster or a store.

A :class:`Monitor` reads the telemetry store only (SQLite, read-only), so one made from a
store path works after the cluster closed, in another process; one made from a live
cluster first asks its scheduler to write what it holds. The five metrics are the seed
dashboard's: queue depth, worker utilisation, job duration (p50/p95), failure rate and
cost per job; with jobs completed today and the trends of duration and cost.

Examples
--------
>>> import packlab, tempfile, os
>>> store = os.path.join(tempfile.mkdtemp(), "t.db")
>>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True, store=store) as pc:
...     _ = pc.client.gather(pc.client.map(abs, range(-5, 5)))
...     s = packlab.monitor(pc).snapshot()
>>> s.jobs, s.failure_rate
(10, 0.0)
>>> packlab.monitor(store).snapshot().jobs  # the store alone, after the cluster closed
10
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from typing import Any

from .. import checks
from ..errors import bad_value
from ..units import format_money
from . import fine
from . import queries as q
from .alerts import Alert, AlertEvaluator, default_rules
from .pricing import Pricing, check_pricing, su_cost
from .sinks import AlertSink
from .tables import METRICS, open_for_reading
from .trends import change, describe_change, describe_trend, percentile

JOB_METRICS = {
    "job_duration": "seconds a finished job ran (one row per job)",
    "job_failed": "1 for a job that ended failed, 0 for one that succeeded",
    "cost_per_job": "what a finished job cost (one row per job)",
}
"""Series made from the finished jobs, besides the sampled :data:`~.store.METRICS`."""


@dataclass(frozen=True)
class Snapshot:
    """The five metrics and their context, at ``at`` (epoch seconds).

    ``utilisation`` is busy thread-seconds over thread-seconds held (the whole history
    in scope); durations are seconds over the recent finished jobs; costs are in
    ``currency``, ``cost_idle`` the part that paid for idle capacity, ``cost_per_job`` the
    rest over the jobs finished. The trends compare
    the later half of the recent jobs with the earlier half. On SLURM, ``service_units``
    is the worker jobs' billing x elapsed hours (as ``sreport`` charges), and
    ``service_units_cost`` that at ``Pricing.su_price``.
    """

    at: float
    queue_depth: int
    utilisation: float
    duration_p50: float | None
    duration_p95: float | None
    failure_rate: float
    cost_per_job: float | None
    currency: str
    cost_total: float
    cost_idle: float
    idle_share: float
    jobs: int
    jobs_failed: int
    jobs_completed_today: int
    workers: int
    duration_trend: str
    duration_change: float | None
    cost_trend: str
    cost_change: float | None
    service_units: float | None = None
    service_units_cost: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trend(rows: list[float], label: str, unit: str = "") -> tuple[str, str, float | None]:
    half = len(rows) // 2
    if half < 1:
        return (f"{label}: no earlier value to compare",) * 2 + (None,)  # type: ignore[return-value]
    prev, cur = math.fsum(rows[:half]) / half, math.fsum(rows[half:]) / (len(rows) - half)
    return describe_change(label, round(cur, 3), round(prev, 3), unit=unit), describe_trend(
        label, cur, prev), change(cur, prev)


def _time(value: object, field: str, now: float) -> float | None:
    """``since``/``until``: None, epoch seconds, a datetime, or a duration ago (``"10m"``)."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        return now - checks.duration(value, field)
    return checks.number(value, field, fix="Epoch seconds, a datetime, or a duration ago such as '10m'.")


_LIVE_EVALUATORS: weakref.WeakKeyDictionary[Any, AlertEvaluator] = weakref.WeakKeyDictionary()
_STORE_EVALUATORS: weakref.WeakValueDictionary[tuple, AlertEvaluator] = weakref.WeakValueDictionary()
_EVALUATORS_LOCK = threading.Lock()


def _evaluator_of(telemetry: Any, store: str, cluster: str | None) -> AlertEvaluator:
    """The alert evaluator of a cluster's telemetry, or of a store file and cluster: one
    each, shared by every monitor of it (and the panel) while any holds it."""
    with _EVALUATORS_LOCK:
        if telemetry is not None:
            table, key = _LIVE_EVALUATORS, telemetry
        else:
            table, key = _STORE_EVALUATORS, (os.path.realpath(store), cluster)
        ev = table.get(key)
        if ev is None:
            ev = table[key] = AlertEvaluator()
        return ev


class Monitor:
    """The telemetry of one cluster (live) or of a store (any time, any process).

    Make it with :func:`monitor`. ``pricing`` (default :meth:`Pricing.from_config`) prices
    the workers held. ``evaluator`` judges the alerts (:class:`~.alerts.AlertEvaluator`):
    by default the one every monitor of the same cluster (live) or of the same store file
    and cluster shares, the panel's included, with its ``sinks``.
    """

    def __init__(self, store: str, *, telemetry: Any = None, cluster: str | None = None,
                 pricing: Pricing | None = None, evaluator: AlertEvaluator | None = None) -> None:
        self.store = store
        self._telemetry = telemetry
        self.cluster = cluster
        self.pricing = Pricing.from_config() if pricing is None else check_pricing(pricing)
        self.evaluator = _evaluator_of(telemetry, store, cluster) if evaluator is None else evaluator
        self.sinks: list[AlertSink] = self.evaluator.sinks
        self._watch: threading.Thread | None = None
        self._stop = threading.Event()
        self._ends: tuple[str, q.EndCounts] | None = None  # counted incrementally, per store file
        self._recent: tuple[tuple, list] | None = None  # (what it was read at, the rows)
        with self._read():  # refuses a store with no telemetry now, not at first use
            pass

    @property
    def live(self) -> bool:
        return self._telemetry is not None

    @contextlib.contextmanager
    def _read(self):
        if self._telemetry is not None:
            self.store = self._telemetry.flush()
        _, con = open_for_reading(self.store)
        try:
            yield con
        finally:
            con.close()

    def _scope(self) -> q.Scope:
        return q.Scope(self.cluster, time.time() if self.live else None)

    def snapshot(self) -> Snapshot:
        """The five metrics now (see :class:`Snapshot`)."""
        with self._read() as con:
            scope = self._scope()
            total, held_s, workers = q.held(con, scope, self.pricing)
            busy_cost, busy_s, _, _ = q.busy(con, scope, self.pricing)
            if self._ends is None or self._ends[0] != self.store:  # a live store can move to a queue's
                self._ends = (self.store, q.EndCounts())
            jobs = q.jobs(con, scope, self.pricing, counts=self._ends[1])
            depth = q.latest(con, "queue_depth") or 0.0
            su = q.service_units(con, scope)
        durations = [r[1] for r in jobs.recent if not r[2]] or [r[1] for r in jobs.recent]
        costs = [r[3] for r in jobs.recent]
        total = max(total, busy_cost)
        d_text, _, d_change = _trend(durations, "Avg duration", "s")
        _, c_text, c_change = _trend(costs, "Cost trend")
        return Snapshot(
            at=time.time(), queue_depth=int(depth),
            utilisation=round(min(1.0, busy_s / held_s), 6) if held_s else 0.0,
            duration_p50=percentile(durations, 50) if durations else None,
            duration_p95=percentile(durations, 95) if durations else None,
            failure_rate=round(jobs.failed / jobs.finished, 6) if jobs.finished else 0.0,
            cost_per_job=round(busy_cost / jobs.finished, 12) if jobs.finished else None,
            currency=self.pricing.currency, cost_total=round(total, 9), cost_idle=round(total - busy_cost, 9),
            idle_share=round((total - busy_cost) / total, 6) if total else 0.0, jobs=jobs.finished,
            jobs_failed=jobs.failed, jobs_completed_today=jobs.done_today, workers=int(workers),
            duration_trend=d_text, duration_change=d_change, cost_trend=c_text, cost_change=c_change,
            service_units=None if su is None else round(su, 9),
            service_units_cost=None if su is None else su_cost(self.pricing, su))

    def pipelines(self) -> list[dict[str, Any]]:
        """The pipelines' stages that ran jobs here (:class:`packlab.Pipeline` tags its
        stage jobs with their pipeline and stage), oldest first: ``pipeline``,
        ``stage``, ``done`` and ``failed`` units (a fan-out's elements), ``retries``,
        ``busy_s`` (worker-seconds of its attempts), ``first``/``last`` event times.
        """
        with self._read() as con:
            rows = q.pipeline_stages(con)
        out = []
        for (pipeline, stage), done, failed, retries, busy, first, last in rows:
            out.append({"pipeline": pipeline, "stage": stage, "done": done, "failed": failed,
                        "retries": int(retries or 0), "busy_s": round(busy or 0.0, 6), "first": first,
                        "last": last})
        return out

    def _recent_jobs(self, con) -> list[tuple[float, float, bool, float]]:
        """The recent finished jobs, read again only when the store has new events or tasks
        (a panel's read asks for them four times: three job metrics and the alerts)."""
        mark = (self.store, self.cluster, self.pricing,
                con.execute("SELECT MAX(rowid) FROM events").fetchone()[0] if q.has_queue(con) else None,
                con.execute("SELECT MAX(rowid) FROM tel_tasks").fetchone()[0])
        cached = self._recent
        if cached is None or cached[0] != mark:
            cached = self._recent = (mark, q.recent(con, self._scope(), self.pricing))
        return cached[1]

    def cpu_efficiency(self, by: str = "fn") -> list[dict[str, Any]]:
        """Dask's own fine performance metrics, per ``by``: ``"owner"``, ``"fn"`` (a queue
        job's function), ``"stage"`` (a pipeline's, ``"pipeline.stage"``) from the queue's
        spans, or ``"prefix"`` (any Dask task's prefix) from the scheduler's totals; busiest
        first. Each: ``seconds`` Dask metered while the tasks ran, ``cpu_seconds`` of them on a
        CPU, ``noncpu_seconds`` not (I/O, sleep), ``cpu_efficiency`` (the share on a CPU),
        ``disk_seconds`` (spill and unspill), and bytes read from memory and disk and
        written to disk. See :mod:`packlab.telemetry.fine`.
        """
        with self._read() as con:
            where, wp = self._scope().where()
            return fine.efficiency(con, where, wp, by)

    def cost(self) -> float:
        """The cost so far (what ``ClusterLauncher``'s ``cost_source`` shows)."""
        with self._read() as con:
            return round(q.held(con, self._scope(), self.pricing)[0], 9)

    def history(self, metric: str, since: Any = None, until: Any = None):
        """One metric over time as an ``xarray.Dataset``: the variable ``metric`` over
        ``time`` (datetime64) and ``source`` (a worker's address, ``""`` for the cluster, or
        ``priority:P``/``owner:O`` for queue depth). A job metric (:data:`JOB_METRICS`) is
        over ``job`` instead, one per finished job, with its end as the ``time`` coordinate.

        ``since``/``until``: epoch seconds, a ``datetime``, or a duration ago (``"1h"``).
        """
        import numpy as np
        import xarray as xr

        checks.choice(metric, "metric", [*METRICS, *JOB_METRICS])
        now = time.time()
        lo, hi = _time(since, "since", now), _time(until, "until", now)
        if lo is not None and hi is not None and lo > hi:
            raise bad_value("since", since, f"a time no later than until={until!r}", "Swap the two.")
        lo_, hi_ = -math.inf if lo is None else lo, math.inf if hi is None else hi
        with self._read() as con:
            if metric in JOB_METRICS:
                recent = self._recent_jobs(con)
                col = {"job_duration": 1, "job_failed": 2, "cost_per_job": 3}[metric]
                picked = [(r[0], float(r[col])) for r in recent if lo_ <= r[0] <= hi_]
                units = {"job_duration": "s", "job_failed": "", "cost_per_job": self.pricing.currency}
                attrs = {"units": units[metric], "kind": "event", "description": JOB_METRICS[metric]}
                ends = (np.array([t for t, _ in picked], dtype=float) * 1e9).astype("datetime64[ns]")
                return xr.Dataset({metric: (("job",), np.array([v for _, v in picked], dtype=float), attrs)},
                                  coords={"time": ("job", ends)}, attrs={"store": self.store})
            rows = con.execute("SELECT t, source, value FROM tel_samples WHERE metric=? AND t >= ? "
                               "AND t <= ? ORDER BY t", (metric, lo_, hi_)).fetchall()
        times = sorted({r[0] for r in rows})
        sources = sorted({r[1] for r in rows})
        ti, si = {t: i for i, t in enumerate(times)}, {s: i for i, s in enumerate(sources)}
        data = np.full((len(times), len(sources)), np.nan)
        for t, s, v in rows:
            data[ti[t], si[s]] = v
        kind, unit, what = METRICS[metric]
        stamps = (np.array(times, dtype=float) * 1e9).astype("datetime64[ns]")
        attrs = {"units": unit, "kind": kind, "description": what}
        return xr.Dataset({metric: (("time", "source"), data, attrs)},
                          coords={"time": stamps, "source": sources}, attrs={"store": self.store})

    # -- alerts ------------------------------------------------------------------------
    def add_sink(self, sink: AlertSink, *, every: float | str = 10.0) -> AlertSink:
        """Send this monitor's alerts (:func:`~.alerts.default_rules`) to ``sink``; a live
        monitor checks them every ``every`` seconds in a thread of its own."""
        if not callable(getattr(sink, "send", None)):
            raise bad_value("sink", sink, "an AlertSink (an object with send(alert))",
                            "E.g. packlab.telemetry.sinks.LogSink() or WebhookSink(url).")
        interval = checks.duration(every, "every", allow_zero=False)
        self.sinks.append(sink)
        if self._telemetry is not None:
            self._telemetry.sinks.append(sink)
            if self._watch is None:
                self._watch = threading.Thread(target=self._watch_loop, args=(interval,), daemon=True,
                                               name="packlab-telemetry-alerts")
                self._watch.start()
        return sink

    def _watch_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if getattr(self._telemetry, "closed", False):
                return  # the cluster closed: nothing more to watch
            with contextlib.suppress(Exception):  # a closed cluster, a store gone: stop quietly
                self.check_alerts()

    def series(self, window: float = 3600.0) -> dict[str, list[tuple[float, float]]]:
        """The alert rules' inputs over the last ``window`` seconds."""
        now = time.time()
        with self._read() as con:
            util = con.execute("SELECT t, value FROM tel_samples WHERE metric='utilisation' AND source='' "
                               "AND t >= ? ORDER BY t", (now - window,)).fetchall()
            depth = con.execute("SELECT t, value FROM tel_samples WHERE metric='queue_depth' AND source='' "
                                "AND t >= ? ORDER BY t", (now - window,)).fetchall()
            recent = [r for r in self._recent_jobs(con) if r[0] >= now - window]
        return {"utilisation": util, "queue_depth": depth, "job_duration": [(r[0], r[1]) for r in recent],
                "job_failed": [(r[0], float(r[2])) for r in recent],
                "cost_per_job": [(r[0], r[3]) for r in recent]}

    def check_alerts(self, rules: list | None = None, now: float | None = None) -> list[Alert]:
        """Judge the rules now (default :func:`~.alerts.default_rules`) with this monitor's
        :attr:`evaluator`, send what fires or resolves to the sinks; the alerts."""
        rules = default_rules() if rules is None else rules
        return self.evaluator.check(rules, self.series, time.time() if now is None else now)

    def close(self) -> None:
        """Stop the alert thread."""
        self._stop.set()

    def __repr__(self) -> str:
        return f"<Monitor store={self.store} {'live' if self.live else 'stored'}>"


def monitor(cluster_or_store: Any, *, pricing: Pricing | None = None) -> Monitor:
    """A :class:`Monitor` of a packlab cluster (live) or of a store file (after the fact).

    Parameters
    ----------
    cluster_or_store : PackCluster or str or os.PathLike
        A cluster from :func:`packlab.launch` (with telemetry on), or the path of a store
        that holds telemetry (``launch(store=)``, a JobQueue's store).
    pricing : packlab.Pricing, optional
        Default :meth:`packlab.Pricing.from_config`.
    """
    tel = getattr(cluster_or_store, "telemetry", None)
    if tel is not None:
        return Monitor(tel.store, telemetry=tel, cluster=tel.cluster_id, pricing=pricing)
    if hasattr(cluster_or_store, "scheduler_address"):
        raise bad_value("cluster_or_store", cluster_or_store,
                        "a cluster launched with telemetry on, or a store",
                        "Launch with packlab.launch(store='packlab.db') (telemetry is on by default).")
    if not isinstance(cluster_or_store, (str, os.PathLike)):
        raise bad_value("cluster_or_store", cluster_or_store, "a PackCluster or a store path",
                        "E.g. packlab.monitor(pc) or packlab.monitor('packlab.db').")
    return Monitor(os.fspath(cluster_or_store), pricing=pricing)


def cost_so_far(cluster: Any) -> str | None:
    """What a cluster's workers have cost so far, as ``"0.12 USD"`` (``None``: no telemetry);
    the default ``cost_source`` of :class:`packlab.ui.ClusterLauncher`.

    Examples
    --------
    >>> cost_so_far(object()) is None
    True
    """
    if getattr(cluster, "telemetry", None) is None:
        return None
    m = monitor(cluster)
    return format_money(m.cost(), m.pricing.currency, cents=True)


__all__ = ["JOB_METRICS", "Monitor", "Snapshot", "cost_so_far", "monitor"]
