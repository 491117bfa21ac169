"""Cost per job: what held workers cost, split between the jobs that kept them busy.

Cost accrues for resources a worker **holds**, idle time included; :func:`attribute`
charges each job its share of every worker it ran on, thread by thread, and reports the
idle remainder apart. Pure, over plain records (:class:`WorkerInterval`,
:class:`JobInterval`, or dicts of their fields, as the store returns rows).

Examples
--------
>>> from packlab.telemetry.pricing import Pricing
>>> r = attribute(Pricing(core_hour=1.0), [{"worker": "w", "start": 0, "stop": 3600, "cores": 1,
...                                          "memory": 0}], [])
>>> r.total, r.idle, r.idle_share
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import checks
from ..errors import PacklabError, bad_value
from .pricing import MARKETS, Pricing, check_pricing
from .records import records


@dataclass(frozen=True)
class WorkerInterval:
    """A worker held from ``start`` to ``stop`` (seconds), with its size.

    ``threads`` (default: ``cores``) is how many jobs it runs at once: a job busy on one
    thread of a 4-thread worker is charged a quarter of the worker. ``billing`` is, for a
    worker in a SLURM job, that job's ``billing`` TRES divided by the workers it runs
    (service units per hour; see :func:`attribute_service_units`).
    """

    worker: str
    start: float
    stop: float
    cores: int
    memory: int
    gpus: int = 0
    threads: int | None = None
    market: str = "on-demand"
    billing: float | None = None

    def __post_init__(self) -> None:
        checks.text(self.worker, "worker")
        if self.billing is not None:
            object.__setattr__(self, "billing", checks.number(self.billing, "billing", minimum=0))
        _times(self, "worker interval")
        object.__setattr__(self, "cores", checks.integer(self.cores, "cores", minimum=1))
        object.__setattr__(self, "memory", 0 if self.memory == 0 and not isinstance(self.memory, bool)
                           else checks.memory(self.memory, "memory"))
        object.__setattr__(self, "gpus", checks.integer(self.gpus, "gpus", minimum=0))
        threads = self.cores if self.threads is None else checks.integer(self.threads, "threads", minimum=1)
        object.__setattr__(self, "threads", threads)
        checks.choice(self.market, "market", MARKETS)


@dataclass(frozen=True)
class JobInterval:
    """Job ``job`` busy on ``threads`` threads of worker ``worker`` from ``start`` to ``stop``."""

    job: str
    worker: str
    start: float
    stop: float
    threads: int = 1

    def __post_init__(self) -> None:
        checks.text(self.job, "job")
        checks.text(self.worker, "worker")
        _times(self, "job interval")
        object.__setattr__(self, "threads", checks.integer(self.threads, "threads", minimum=1))


def _times(rec: Any, what: str) -> None:
    start, stop = checks.number(rec.start, "start"), checks.number(rec.stop, "stop")
    if stop < start:
        raise bad_value("stop", rec.stop, f"a time no earlier than start={rec.start!r} ({what})",
                        "Swap start and stop, or check the clock they came from.")
    object.__setattr__(rec, "start", start)
    object.__setattr__(rec, "stop", stop)


@dataclass(frozen=True)
class CostReport:
    """Cost of a run: per job, the idle remainder, and the seconds behind them.

    ``total == sum(jobs.values()) + idle`` (to rounding). ``unheld_seconds`` counts job
    thread-seconds on no held worker (a record lost or clocks apart): they are not priced.
    """

    currency: str
    total: float
    idle: float
    jobs: dict[str, float] = field(default_factory=dict)
    held_seconds: float = 0.0
    busy_seconds: float = 0.0
    unheld_seconds: float = 0.0

    @property
    def idle_share(self) -> float:
        """The fraction of the total that paid for idle capacity (0 when nothing cost)."""
        return round(self.idle / self.total, 12) if self.total else 0.0


def attribute(pricing: Pricing, held: Iterable[WorkerInterval | Mapping[str, Any]],
              busy: Iterable[JobInterval | Mapping[str, Any]]) -> CostReport:
    """Split what held workers cost between the jobs that kept them busy, and idle time.

    Over each stretch of a held worker where the same jobs run, the worker's cost is
    shared by thread: a job on ``k`` of its ``T`` threads pays ``k / T``, the unused
    threads are idle. When the jobs claim more threads than the worker has, they share
    the whole cost in proportion and nothing is idle. Busy time outside every held
    interval of its worker is counted in ``unheld_seconds`` and not priced.

    Examples
    --------
    >>> p = Pricing(core_hour=1.0)
    >>> held = [WorkerInterval("w1", 0, 3600, cores=2, memory=0)]  # 2 core-hours: 2.00
    >>> busy = [JobInterval("a", "w1", 0, 1800), JobInterval("b", "w1", 0, 3600)]
    >>> r = attribute(p, held, busy)  # a: 1/2 x 1/2 h x 2/h = 0.5; b: 1/2 x 1 h x 2/h = 1.0
    >>> r.jobs, r.idle, r.total
    ({'a': 0.5, 'b': 1.0}, 0.5, 2.0)
    """
    check_pricing(pricing)
    return _split(held, busy, pricing.currency, lambda i, w: pricing.hourly(
        cores=w.cores, memory=w.memory, gpus=w.gpus, market=w.market))


def attribute_service_units(held: Iterable[WorkerInterval | Mapping[str, Any]],
                            busy: Iterable[JobInterval | Mapping[str, Any]]) -> CostReport:
    """As :func:`attribute`, in SLURM service units: each held worker accrues its
    ``billing`` per hour (``currency`` is ``"SU"``); ``su_cost`` turns them into money.

    Examples
    --------
    >>> held = [WorkerInterval("w1", 0, 7200, cores=4, memory=0, billing=6)]  # 6 x 2 h = 12 SU
    >>> r = attribute_service_units(held, [JobInterval("a", "w1", 0, 3600, threads=4)])
    >>> r.jobs, r.idle, r.currency  # a: the whole worker for 1 h = 6 SU
    ({'a': 6.0}, 6.0, 'SU')
    """
    def rate(i: int, w: WorkerInterval) -> float:
        if w.billing is None:
            raise bad_value(f"held[{i}].billing", None, "the billing TRES of the worker's SLURM job",
                            "Read it with packlab.telemetry.pricing.billing(tres) from `scontrol show job`.")
        return w.billing

    return _split(held, busy, "SU", rate)


def _split(held: object, busy: object, currency: str,
           hourly: Callable[[int, WorkerInterval], float]) -> CostReport:
    """The sweep behind :func:`attribute`: ``hourly(i, worker)`` is the i-th worker's rate."""
    workers = records(held, WorkerInterval, "held")
    spans = records(busy, JobInterval, "busy")
    by_worker: dict[str, list[JobInterval]] = {}
    for s in spans:
        by_worker.setdefault(s.worker, []).append(s)
    _check_no_overlap(workers)
    jobs: dict[str, float] = {s.job: 0.0 for s in spans}
    idle = total = held_s = covered = 0.0
    for i, w in enumerate(workers):
        rate = hourly(i, w) / 3600
        held_s += w.stop - w.start
        total += rate * (w.stop - w.start)
        share, idle_w, busy_w = _sweep(w, by_worker.get(w.worker, []))
        covered += busy_w
        idle += rate * idle_w
        for job, secs in share.items():
            jobs[job] += rate * secs
    busy_s = math.fsum((s.stop - s.start) * s.threads for s in spans)
    return CostReport(currency=currency, total=round(total, 9), idle=round(idle, 9),
                      jobs={j: round(c, 9) for j, c in jobs.items()}, held_seconds=held_s,
                      busy_seconds=busy_s, unheld_seconds=round(busy_s - covered, 9))


def _check_no_overlap(workers: list[WorkerInterval]) -> None:
    last: dict[str, WorkerInterval] = {}
    for w in sorted(workers, key=lambda w: (w.worker, w.start)):
        prev = last.get(w.worker)
        if prev is not None and w.start < prev.stop:
            raise PacklabError(
                f"held: worker {w.worker!r} is held twice at once ({prev.start:g}-{prev.stop:g} and "
                f"{w.start:g}-{w.stop:g}): one worker name is one worker; merge the intervals or "
                "name the workers apart.", field="held", value=w)
        last[w.worker] = w


def _sweep(w: WorkerInterval, spans: list[JobInterval]) -> tuple[dict[str, float], float, float]:
    """For one held interval: worker-seconds charged to each job, idle worker-seconds, and
    the job thread-seconds that fell inside it."""
    events = []
    for s in spans:
        a, b = max(s.start, w.start), min(s.stop, w.stop)
        if b > a:
            events += [(a, s.threads, s.job), (b, -s.threads, s.job)]
    events.sort(key=lambda e: (e[0], e[1]))  # at one instant, ends before starts
    threads = w.threads
    active: dict[str, int] = {}
    share: dict[str, float] = {}
    idle = busy = 0.0
    t = w.start
    for when, delta, job in [*events, (w.stop, 0, "")]:
        dt = when - t
        if dt > 0:
            used = sum(active.values())
            busy += used * dt
            denom = max(used, threads)
            for j, k in active.items():
                share[j] = share.get(j, 0.0) + dt * k / denom
            idle += dt * max(threads - used, 0) / threads
            t = when
        if delta:
            active[job] = active.get(job, 0) + delta
            if active[job] == 0:
                del active[job]
    return share, idle, busy
