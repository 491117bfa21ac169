"""What the panel draws, as plain data: pure functions from a Monitor's snapshot and history.

Nothing here imports Bokeh or reads a store: each function turns what
:class:`packlab.telemetry.monitor.Monitor` returned (a :class:`~.monitor.Snapshot`, an
``xarray.Dataset`` from ``history()``, the alert rules' state, the advisor's findings)
into the columns, labels and colours one plot or card shows, so each is tested alone and
the Bokeh code in :mod:`packlab.ui.panel` only copies them into its sources.

Colours are a status page's: green is fine, amber needs a look, red needs action, grey
has no data. The top row's cards and the alert and finding lists are in :mod:`.cards`.

Examples
--------
>>> worker_colour(connected=True, memory_share=0.5)
'#2e9e44'
>>> health_label([worker_colour(True, 0.5), worker_colour(True, 0.97), worker_colour(False, 0, stopped=True)])
'1/2 healthy'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .cards import (  # the top row and the lists; status colours: fine, a look, action, no data
    BAD,
    NONE,
    OK,
    SEVERITY,
    WARN,
    Card,
    cards,
    cards_html,
    findings_html,
    money,
    pipelines_html,
    rule_threshold,
    seconds,
)

LINES = ("#3b7dd8", "#8e44ad", "#16a085", "#d35400", "#2c3e50", "#c0392b", "#7f8c8d", "#27ae60")
"""Line colours for categories (priority classes, series), distinct from the status colours."""

MEMORY_WARN, MEMORY_BAD = 0.8, 0.95  # share of a worker's memory limit
STALE_AFTER = 10.0  # a worker not sampled for this many seconds (and sample intervals) is gone


# -- time --------------------------------------------------------------------------------
def epoch_seconds(times: Any) -> np.ndarray:
    """``datetime64`` values (a history's ``time``) as float epoch seconds.

    Examples
    --------
    >>> epoch_seconds(np.array(["1970-01-01T00:00:02"], dtype="datetime64[ns]")).tolist()
    [2.0]
    """
    a = np.asarray(times)
    if a.dtype.kind == "M":
        return a.astype("datetime64[ns]").astype("int64") / 1e9
    return a.astype(float)


def to_ms(seconds: Any) -> np.ndarray:
    """Epoch seconds as the epoch milliseconds a Bokeh datetime axis takes."""
    return np.asarray(seconds, dtype=float) * 1e3


def bucket(
    t: Sequence[float], v: Sequence[float], points: int, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` rows of ``(t, v)``: equal time buckets, each its ``how``
    (``mean``, ``max``, ``last``) at its mean time; NaN values are left out.

    Examples
    --------
    >>> bucket([0, 1, 2, 3], [1, 3, 5, 7], points=2)
    (array([0.5, 2.5]), array([2., 6.]))
    """
    t, v = np.asarray(t, dtype=float), np.asarray(v, dtype=float)
    keep = ~np.isnan(v)
    t, v = t[keep], v[keep]
    if len(t) <= points:
        return t, v
    edges = np.linspace(t[0], t[-1], points + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, points - 1)
    counts = np.bincount(idx, minlength=points)
    full = counts > 0
    tm = np.bincount(idx, weights=t, minlength=points)[full] / counts[full]
    if how == "mean":
        vm = np.bincount(idx, weights=v, minlength=points)[full] / counts[full]
    elif how == "max":
        vm = np.full(points, -np.inf)
        np.maximum.at(vm, idx, v)
        vm = vm[full]
    else:  # last: rows are in time order, so the last write of each bucket wins
        vm = np.full(points, np.nan)
        vm[idx] = v
        vm = vm[full]
    return tm, vm


# -- history datasets ---------------------------------------------------------------------
def by_source(ds: Any, metric: str, prefix: str | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{source: (epoch seconds, values)}`` of one metric's history, NaNs dropped;
    ``prefix`` keeps the sources that start with it (``"priority:"``), without it."""
    out = {}
    if ds is None or metric not in ds or ds.sizes.get("time", 0) == 0:
        return out
    t = epoch_seconds(ds["time"].values)
    data = ds[metric].values
    for i, s in enumerate(ds["source"].values.tolist()):
        if prefix is not None and not s.startswith(prefix):
            continue
        col = data[:, i]
        keep = ~np.isnan(col)
        if keep.any():
            out[s[len(prefix) :] if prefix else s] = (t[keep], col[keep])
    return out


def total(ds: Any, metric: str, workers_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The sum over the workers of one per-worker metric at each sample time."""
    return _over_workers(ds, metric, np.nansum, workers_only)


def mean(ds: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The mean over the workers that report one per-worker metric, at each sample time
    (a GPU's utilisation: workers without a GPU report none and do not count)."""
    return _over_workers(ds, metric, np.nanmean)


def _over_workers(ds: Any, metric: str, reduce: Any,
                  workers_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``reduce`` (nansum, nanmean) over the sources of one metric at each sample time at
    which any of them reported."""
    if ds is None or metric not in ds or ds.sizes.get("time", 0) == 0:
        return np.array([]), np.array([])
    sources = np.array(ds["source"].values.tolist(), dtype=object)
    cols = sources != "" if workers_only else np.ones(len(sources), bool)
    data = ds[metric].values[:, cols]
    seen = ~np.isnan(data).all(axis=1)
    return epoch_seconds(ds["time"].values)[seen], reduce(data[seen], axis=1)


def latest(ds: Any, metric: str) -> dict[str, tuple[float, float]]:
    """``{source: (time, value)}``: each source's most recent sample of one metric."""
    return {s: (float(t[-1]), float(v[-1])) for s, (t, v) in by_source(ds, metric).items()}


# -- plots --------------------------------------------------------------------------------
def share_percent(t_num: np.ndarray, num: np.ndarray, t_den: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` in percent at ``t_num``, the denominator carried forward from its last
    sample at or before each time (0 where there is none).

    Examples
    --------
    >>> share_percent(np.array([1., 2.]), np.array([1., 3.]), np.array([0.]), np.array([4.])).tolist()
    [25.0, 75.0]
    """
    if len(t_num) == 0 or len(t_den) == 0:
        return np.zeros(len(t_num))
    i = np.searchsorted(t_den, t_num, side="right") - 1
    d = np.where(i >= 0, den[np.clip(i, 0, None)], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, 100.0 * num / np.where(d > 0, d, 1), 0.0)


def held_at(t: Sequence[float], info: Sequence[Any], attr: str = "memory_limit") -> np.ndarray:
    """The sum of ``attr`` over the workers held at each time of ``t`` (a worker is held
    from ``started`` to ``stopped``, or on).

    Examples
    --------
    >>> from types import SimpleNamespace as W
    >>> ws = [W(started=1, stopped=10, memory_limit=4), W(started=4, stopped=None, memory_limit=2)]
    >>> held_at([0, 5, 20], ws)
    array([0., 6., 2.])
    """
    t = np.asarray(t, dtype=float)
    out = np.zeros(len(t))
    for w in info:
        end = math.inf if w.stopped is None else w.stopped
        out += np.where((t >= w.started) & (t <= end), float(getattr(w, attr) or 0), 0.0)
    return out


def rolling(t: Sequence[float], v: Sequence[float], points: int, stat: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-job values (``t`` = each job's end) as ``points`` time buckets at most of their
    ``stat``: ``p50``, ``p95`` (percentiles) or ``mean``.

    Examples
    --------
    >>> rolling([0, 1, 2, 3], [1, 2, 3, 10], points=1, stat="p50")
    (array([1.5]), array([2.5]))
    """
    t, v = np.asarray(t, dtype=float), np.asarray(v, dtype=float)
    if len(t) == 0:
        return t, v
    edges = np.linspace(t[0], t[-1], max(1, points) + 1) if t[-1] > t[0] else np.array([t[0], t[0] + 1])
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    ts, vs = [], []
    for b in np.unique(idx):
        sel = idx == b
        vals = v[sel]
        ts.append(t[sel].mean())
        vs.append(vals.mean() if stat == "mean" else np.percentile(vals, 50 if stat == "p50" else 95))
    return np.array(ts), np.array(vs)


def rate_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """How fast a running total grows per hour, from its ``(time, total)`` readings
    (first to last); ``None`` with fewer than two readings apart in time.

    Examples
    --------
    >>> rate_per_hour([(0, 1.0), (1800, 1.5)])
    1.0
    """
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return None
    (t0, c0), (t1, c1) = points[0], points[-1]
    return max(0.0, (c1 - c0) / (t1 - t0) * 3600.0)


# -- workers ------------------------------------------------------------------------------
def worker_colour(connected: bool, memory_share: float | None, stopped: bool = False) -> str:
    """A worker's status colour: grey once it stopped, red when it stopped answering or is
    at its memory limit, amber when its memory is high, green when fine.

    Examples
    --------
    >>> worker_colour(False, 0.1) == BAD, worker_colour(True, 0.85) == WARN, worker_colour(True, None) == OK
    (True, True, True)
    """
    if stopped:
        return NONE
    if not connected:
        return BAD
    if memory_share is None:
        return OK
    return BAD if memory_share >= MEMORY_BAD else WARN if memory_share >= MEMORY_WARN else OK


def health_label(colours: Iterable[str]) -> str:
    """``"4/5 healthy"``: the green workers of those held (``"3 stopped"`` when none is).

    Examples
    --------
    >>> health_label([OK, WARN, NONE]), health_label([NONE, NONE])
    ('1/2 healthy', '2 stopped')
    """
    cs = list(colours)
    held = [c for c in cs if c != NONE]
    if not held:
        return f"{len(cs)} stopped" if cs else "no workers"
    return f"{sum(c == OK for c in held)}/{len(held)} healthy"


@dataclass(frozen=True)
class WorkerHealth:
    """One marker of the worker-health plot."""

    name: str
    cpu: float  # percent of its threads' cores in use
    memory_share: float | None  # of its limit
    connected: bool
    colour: str
    state: str


def workers(
    info: Sequence[Any],
    cpu: Mapping[str, tuple[float, float]],
    memory: Mapping[str, tuple[float, float]],
    now: float,
    interval: float = 1.0,
) -> list[WorkerHealth]:
    """Each worker's marker: ``info`` (:func:`packlab.telemetry.workers.workers`: threads,
    memory limit, stopped) with the latest sample of its CPU and memory (:func:`latest`).
    A worker still held whose last sample is older than ``max(STALE_AFTER, 5 x interval)``
    before ``now`` has stopped answering.

    Examples
    --------
    >>> from types import SimpleNamespace as W
    >>> ws = [W(worker="a", name="0", threads=2, memory_limit=10, stopped=None),
    ...       W(worker="b", name="1", threads=1, memory_limit=10, stopped=None)]
    >>> [(w.cpu, w.state) for w in workers(ws, {"a": (10, 1.0), "b": (0, 0.0)}, {"a": (10, 9.0)}, now=20)]
    [(50.0, 'memory 90 %'), (0.0, 'not answering')]
    """
    stale = max(STALE_AFTER, 5 * interval)
    out = []
    for w in info:
        t = max(cpu.get(w.worker, (-math.inf, 0))[0], memory.get(w.worker, (-math.inf, 0))[0])
        stopped = w.stopped is not None
        connected = not stopped and now - t <= stale
        mem = memory.get(w.worker, (0, None))[1]
        share = mem / w.memory_limit if mem is not None and w.memory_limit else None
        colour = worker_colour(connected, share, stopped)
        state = (
            "stopped"
            if stopped
            else "not answering"
            if not connected
            else f"memory {share * 100:.0f} %"
            if colour != OK and share is not None
            else "ok"
        )
        used = float(cpu.get(w.worker, (0, 0.0))[1])
        out.append(WorkerHealth(w.name, 100.0 * used / max(1, w.threads), share, connected, colour, state))
    return out


__all__ = [
    "BAD",
    "LINES",
    "NONE",
    "OK",
    "SEVERITY",
    "WARN",
    "Card",
    "WorkerHealth",
    "bucket",
    "by_source",
    "cards",
    "cards_html",
    "epoch_seconds",
    "findings_html",
    "health_label",
    "latest",
    "mean",
    "money",
    "pipelines_html",
    "rate_per_hour",
    "rolling",
    "rule_threshold",
    "seconds",
    "share_percent",
    "to_ms",
    "total",
    "worker_colour",
    "workers",
]
