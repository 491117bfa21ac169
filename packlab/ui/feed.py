"""The panel's reads: a :class:`Feed` turns a Monitor's snapshot and history into the data
of every plot (a :class:`Frame`), one read at a time. No Bokeh here.

A feed reads the store only, never the scheduler (a cluster's monitor is replaced by
one over the cluster's store file), so a panel left open adds no load to the scheduler.
The first read takes the history in view (``packlab.panel.history`` for a live panel,
all of it for a store alone); every later read asks ``history()`` only for the rows
after the last one it has, keeps the cluster-wide lines (a few thousand points), and
hands the plots at most ``points`` points per line.

Examples
--------
>>> import packlab, tempfile, os
>>> store = os.path.join(tempfile.mkdtemp(), "t.db")
>>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True, store=store) as pc:
...     _ = pc.client.gather(pc.client.map(abs, range(-5, 5)))
>>> f = Feed(store).read()
>>> f.snapshot.jobs, f.health_label
(10, '1 stopped')
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import checks, config
from ..errors import bad_value
from ..telemetry.alerts import default_rules
from ..telemetry.monitor import Monitor, Snapshot, monitor
from ..telemetry.summary import advise
from ..telemetry.workers import workers as held_workers
from . import viewmodel as vm

#: Per-worker metrics summed over the workers for the utilisation plot, and per-cluster ones.
WORKER_SUMS = ("cpu", "memory")
WORKER_MEANS = ("gpu",)  # only workers with a GPU report it
CLUSTER = ("utilisation", "threads")
Line = tuple[np.ndarray, np.ndarray]  # epoch seconds, values


@dataclass
class Frame:
    """Everything one read of the panel shows; times in epoch seconds."""

    snapshot: Snapshot
    queue: dict[str, Line]  # priority class ("all" for the total) -> depth
    queue_growing: bool
    utilisation: dict[str, Line]  # "busy threads", "CPU", "memory" (, "GPU") -> percent
    workers: list[vm.WorkerHealth]
    health_label: str
    durations: Line  # one row per finished job
    p50: Line
    p95: Line
    sla: float | None
    failure: Line  # percent of the jobs ending in each time bucket
    failure_limit: float | None
    job_cost: Line  # cost per job, bucket means
    cost_total: Line  # the running total (live readings)
    cards: list[vm.Card]
    alerts: list[Any]
    findings: list[Any]
    live: bool
    pipelines: list[dict[str, Any]] = field(default_factory=list)  # Monitor.pipelines()
    at: float = field(default_factory=time.time)


def _source(obj: Any) -> tuple[Monitor, Any]:
    """A store-only monitor to read, and the cluster (or live monitor) it follows; it
    judges alerts with the evaluator of the monitor it copies (one state, one set of sinks)."""
    if isinstance(obj, Monitor):
        copy = Monitor(obj.store, cluster=obj.cluster, pricing=obj.pricing, evaluator=obj.evaluator)
        return copy, obj if obj.live else None
    if getattr(obj, "telemetry", None) is not None:
        m = monitor(obj)
        return Monitor(m.store, cluster=m.cluster, pricing=m.pricing, evaluator=m.evaluator), obj
    if isinstance(obj, (str, os.PathLike)):
        return monitor(obj), None
    raise bad_value(
        "source",
        obj,
        "a PackCluster launched with telemetry, a packlab.Monitor or a store path",
        "E.g. packlab.ui.panel(pc), panel(packlab.monitor(pc)) or panel('packlab.db').",
    )


class Feed:
    """Reads for one panel (see the module's docstring).

    Parameters
    ----------
    source : PackCluster, Monitor or str
    history : float or str, optional
        How much history the first read takes: default ``packlab.panel.history`` when
        following a cluster, everything for a store.
    points : int, optional
        Points per line at most (default ``packlab.panel.report-points``).
    interval : float
        Seconds between reads, to judge when a worker has gone.
    """

    def __init__(
        self,
        source: Any,
        *,
        history: float | str | None = None,
        points: int | None = None,
        interval: float = 1.0,
    ) -> None:
        self.monitor, self.follows = _source(source)
        self.live = self.follows is not None
        if history is None and self.live:
            history = config.get("panel.history")
        self.history = None if history is None else checks.duration(history, "history", allow_zero=False)
        self.points = checks.integer(
            config.get("panel.report-points") if points is None else points, "points", minimum=10
        )
        self.interval = interval
        self.rules = default_rules()
        self.findings_every = 10.0
        self._findings: list | None = None
        self._findings_at = 0.0
        self._advising = threading.Event()
        self._reset()

    def _reset(self) -> None:
        self._last: dict[str, float] = {}
        self._lines: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        self._latest: dict[str, dict[str, tuple[float, float]]] = {m: {} for m in WORKER_SUMS}
        self._costs: deque[tuple[float, float]] = deque(maxlen=600)

    def _follow_store(self) -> None:
        """A cluster's telemetry moves to a JobQueue's store when one opens: follow it."""
        tel = getattr(self.follows, "telemetry", None)
        store = tel.store if tel is not None else getattr(self.follows, "store", None)
        if store and os.path.abspath(store) != os.path.abspath(self.monitor.store):
            m = self.monitor
            self.monitor = Monitor(store, cluster=m.cluster, pricing=m.pricing, evaluator=m.evaluator)
            self._reset()

    def _since(self, metric: str, now: float) -> float | None:
        last = self._last.get(metric)
        if last is not None:
            return last + 1e-6
        return None if self.history is None else now - self.history

    def _append(self, name: str, t: np.ndarray, v: np.ndarray, now: float) -> None:
        ts, vs = self._lines.setdefault(name, ([], []))
        if len(t):
            ts.append(t)
            vs.append(v)
        if len(ts) > 64:  # keep few arrays: one concatenation now and then
            ts[:] = [np.concatenate(ts)]
            vs[:] = [np.concatenate(vs)]
        if self.live and self.history is not None and ts:
            keep = ts[0] >= now - self.history
            if not keep.all():
                ts[0], vs[0] = ts[0][keep], vs[0][keep]

    def line(self, name: str) -> Line:
        ts, vs = self._lines.get(name, ([], []))
        if not ts:
            return np.array([]), np.array([])
        return np.concatenate(ts), np.concatenate(vs)

    def _read_history(self, now: float) -> None:
        m = self.monitor
        for metric in (*WORKER_SUMS, *WORKER_MEANS, *CLUSTER, "queue_depth"):
            ds = m.history(metric, since=self._since(metric, now))
            if ds.sizes["time"] == 0:
                continue
            self._last[metric] = float(vm.epoch_seconds(ds["time"].values[-1:])[0])
            if metric in WORKER_SUMS:
                self._latest[metric].update(vm.latest(ds, metric))
                self._append(metric, *vm.total(ds, metric), now)
            elif metric in WORKER_MEANS:
                self._append(metric, *vm.mean(ds, metric), now)
            elif metric == "queue_depth":
                for name, (t, v) in vm.by_source(ds, metric, prefix="priority:").items():
                    self._append(f"queue:{name}", t, v, now)
                for name, (t, v) in vm.by_source(ds, metric).items():
                    if name == "":
                        self._append("queue:all", t, v, now)
            else:
                for name, (t, v) in vm.by_source(ds, metric).items():
                    if name == "":
                        self._append(metric, t, v, now)

    def _findings_now(self, m: Monitor) -> list:
        """The advisor's findings: read now the first time, then refreshed in a thread of
        their own every ``findings_every`` seconds (the advisor's scan of a large store
        takes longer than a 1 Hz update may), so an update never waits for them."""
        if self._findings is None:
            self._findings, self._findings_at = advise(m), time.time()
        elif time.time() - self._findings_at >= self.findings_every and not self._advising.is_set():
            self._advising.set()
            self._findings_at = time.time()

            def work() -> None:
                try:
                    self._findings = advise(m)
                except Exception:  # a store gone: keep the last findings
                    pass
                finally:
                    self._advising.clear()

            threading.Thread(target=work, daemon=True, name="packlab-panel-advise").start()
        return self._findings

    def _spot_savings(self, cost: float) -> float | None:
        """What the same workers would have cost at the on-demand price, less what they cost."""
        p = self.monitor.pricing
        if not (p.spot_discount or p.reserved_discount):
            return None
        full = Monitor(
            self.monitor.store,
            cluster=self.monitor.cluster,
            pricing=dataclasses.replace(p, spot_discount=0.0, reserved_discount=0.0),
        ).cost()
        return max(0.0, full - cost)

    def read(self) -> Frame:
        """One read: the snapshot, new history rows, the alerts and findings."""
        if self.live:
            self._follow_store()
        now = time.time()
        m = self.monitor
        snap = m.snapshot()
        self._read_history(now)
        end = now if self.live else max([now - 1e9, *self._last.values()])
        pts = self.points

        queue = {
            k.removeprefix("queue:"): vm.bucket(*self.line(k), pts)
            for k in sorted(self._lines)
            if k.startswith("queue:")
        }
        util: dict[str, Line] = {}
        ut, uv = self.line("utilisation")
        util["busy threads"] = vm.bucket(ut, uv * 100.0, pts)
        ct, cv = self.line("cpu")
        util["CPU"] = vm.bucket(ct, vm.share_percent(ct, cv, *self.line("threads")), pts)
        info = held_workers(m)
        mt, mv = self.line("memory")
        limit = vm.held_at(mt, info)
        util["memory"] = vm.bucket(
            mt, np.divide(100.0 * mv, limit, out=np.zeros(len(mv)), where=limit > 0), pts
        )
        gt, gv = self.line("gpu")
        if len(gt):  # workers with a GPU (Dask's NVML metric): their mean utilisation
            util["GPU"] = vm.bucket(gt, gv * 100.0, pts)

        health = vm.workers(info, self._latest["cpu"], self._latest["memory"], end, self.interval)
        label = vm.health_label(w.colour for w in health)

        dur = m.history("job_duration")
        jt = vm.epoch_seconds(dur["time"].values)
        jd = dur["job_duration"].values
        failed = m.history("job_failed")
        jc = m.history("cost_per_job")
        nb = max(1, min(60, len(jt) // 5))  # buckets with about five jobs each, 60 at most
        p50, p95 = vm.rolling(jt, jd, nb, "p50"), vm.rolling(jt, jd, nb, "p95")
        ft, fv = vm.rolling(
            vm.epoch_seconds(failed["time"].values), failed["job_failed"].values * 100, nb, "mean"
        )
        cost_line = vm.rolling(vm.epoch_seconds(jc["time"].values), jc["cost_per_job"].values, nb, "mean")

        self._costs.append((snap.at, snap.cost_total))
        recent = [(t, c) for t, c in self._costs if t >= snap.at - 60]
        rate = vm.rate_per_hour(recent) if self.live else None

        # judged by the monitor's evaluator, which its alert thread and sinks share
        m.check_alerts(self.rules, now)
        firing = m.evaluator.firing  # the firing alert of each active rule (it fired once)
        active_names = set(firing)
        active = list(firing.values())

        sla = vm.rule_threshold(self.rules, "job-duration-sla")
        limit = vm.rule_threshold(self.rules, "failure-rate")
        findings = self._findings_now(m)
        cs = vm.cards(
            snap,
            healthy=label,
            sla=sla,
            failure_limit=limit,
            cost_rate=rate,
            spot_savings=self._spot_savings(snap.cost_total),
            active=active_names,
        )
        return Frame(
            snapshot=snap,
            queue=queue,
            queue_growing="queue-depth-growing" in active_names,
            utilisation=util,
            workers=health,
            health_label=label,
            durations=(jt, jd),
            p50=p50,
            p95=p95,
            sla=sla,
            failure=(ft, fv),
            failure_limit=None if limit is None else limit * 100,
            job_cost=cost_line,
            cost_total=(np.array([t for t, _ in self._costs]), np.array([c for _, c in self._costs])),
            cards=cs,
            alerts=active,
            findings=findings,
            live=self.live,
            pipelines=m.pipelines(),
            at=now,
        )


__all__ = ["Feed", "Frame"]
