"""What the panel draws, as plain data: pure functions from a Monitor's snapshot and history.

Nothing here imports Bokeh or reads a store: each function turns what
:class:`packlab.telemetry.monitor.Monitor` returned (a :class:`~.monitor.Snapshot`, an
``xarray.Dataset`` from ``history()``, the alert rules' state, the advisor's findings)
into the columns, labels and colours one plot or card shows, so each is tested alone and
the Bokeh code in :mod:`packlab.ui.panel` only copies them into its sources.

Colours are a status page's: green is fine, amber needs a look, red needs action, grey
has no data.

Examples
--------
>>> worker_colour(connected=True, memory_share=0.5)
'#2e9e44'
>>> health_label([worker_colour(True, 0.5), worker_colour(True, 0.97), worker_colour(False, 0, stopped=True)])
'1/2 healthy'
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OK, WARN, BAD, NONE = "#2e9e44", "#e0a100", "#d1344b", "#9aa0a6"
"""Status colours: fine, needs a look, needs action, no data."""
SEVERITY = {"info": "#3b7dd8", "warning": WARN, "critical": BAD}
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
    if ds is None or metric not in ds or ds.sizes.get("time", 0) == 0:
        return np.array([]), np.array([])
    sources = np.array(ds["source"].values.tolist(), dtype=object)
    cols = sources != "" if workers_only else np.ones(len(sources), bool)
    data = ds[metric].values[:, cols]
    seen = ~np.isnan(data).all(axis=1)
    return epoch_seconds(ds["time"].values)[seen], np.nansum(data, axis=1)[seen]


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


# -- cards and lists ----------------------------------------------------------------------
def money(x: float | None, currency: str) -> str:
    """``"0.0123 USD"``, ``"6.3e-07 USD"``; ``"n/a"`` for ``None``.

    Examples
    --------
    >>> money(0.0123, "USD"), money(6.3e-7, "EUR"), money(12.5, "USD")
    ('0.0123 USD', '6.3e-07 EUR', '12.50 USD')
    """
    if x is None:
        return "n/a"
    if x and abs(x) < 0.001:
        return f"{x:.2g} {currency}"
    return f"{x:,.4f} {currency}" if abs(x) < 1 else f"{x:,.2f} {currency}"


def seconds(x: float | None) -> str:
    """``"1.5 s"``, ``"3.2 min"``, ``"2.1 h"``; ``"n/a"`` for ``None``."""
    if x is None:
        return "n/a"
    return f"{x:.3g} s" if x < 120 else f"{x / 60:.3g} min" if x < 7200 else f"{x / 3600:.3g} h"


@dataclass(frozen=True)
class Card:
    """One number of the panel's top row: its label, the value as text, its status colour
    and a line under it."""

    label: str
    value: str
    colour: str = NONE
    note: str = ""


def cards(
    s: Any,
    *,
    healthy: str,
    sla: float | None,
    failure_limit: float | None,
    cost_rate: float | None,
    spot_savings: float | None,
    active: Iterable[str] = (),
) -> list[Card]:
    """The top row from a :class:`~packlab.telemetry.monitor.Snapshot` (``s``) and the
    few figures drawn beside it: ``healthy`` (:func:`health_label`), the SLA and failure
    rate limit of the alert rules, the cost per hour now and the spot savings; ``active``
    names the alert rules firing (their card turns red or amber)."""
    active = set(active)
    cur = s.currency
    n_ok, _, n_all = healthy.partition(" ")[0].partition("/")
    worker_colour_ = NONE if not n_all else OK if n_ok == n_all else WARN
    p95 = s.duration_p95
    dur_colour = (
        NONE
        if p95 is None
        else BAD
        if "job-duration-sla" in active
        else (WARN if sla and p95 > 0.8 * sla else OK)
    )
    fail_colour = (
        NONE
        if not s.jobs
        else BAD
        if "failure-rate" in active
        else (WARN if failure_limit and s.failure_rate > 0.5 * failure_limit else OK)
    )
    queue_colour = WARN if "queue-depth-growing" in active else OK
    util_colour = (
        WARN
        if {"utilisation-low", "utilisation-high"} & active
        else NONE
        if not s.workers and not s.jobs
        else OK
    )
    idle_colour = WARN if s.idle_share > 0.5 else OK if s.cost_total else NONE
    return [
        Card(
            "Queue depth",
            f"{s.queue_depth}",
            queue_colour,
            "growing" if "queue-depth-growing" in active else "jobs waiting",
        ),
        Card("Workers", healthy, worker_colour_, f"{s.workers} held now"),
        Card("Utilisation", f"{s.utilisation * 100:.0f} %", util_colour, "busy thread-seconds"),
        Card(
            "Duration p50 / p95",
            f"{seconds(s.duration_p50)} / {seconds(s.duration_p95)}",
            dur_colour,
            f"SLA {seconds(sla)}" if sla else s.duration_trend,
        ),
        Card(
            "Failure rate", f"{s.failure_rate * 100:.1f} %", fail_colour, f"{s.jobs_failed} of {s.jobs} jobs"
        ),
        Card(
            "Jobs completed today",
            f"{s.jobs_completed_today:,}",
            OK if s.jobs_completed_today else NONE,
            f"{s.jobs:,} finished in all",
        ),
        Card(
            "Cost so far",
            money(s.cost_total, cur),
            NONE,
            "no prices set (packlab.pricing)"
            if not s.cost_total
            else "rate n/a"
            if cost_rate is None
            else f"{money(cost_rate, cur)}/h now",
        ),
        Card(
            "Cost per job",
            money(s.cost_per_job, cur),
            WARN if "cost-per-job-up" in active else NONE,
            s.cost_trend,
        ),
        Card("Idle share", f"{s.idle_share * 100:.0f} %", idle_colour, f"{money(s.cost_idle, cur)} idle"),
        Card("Spot savings", money(spot_savings, cur), OK if spot_savings else NONE, "vs on-demand"),
    ]


def cards_html(cs: Sequence[Card]) -> str:
    """The cards as one HTML block (a grid of tiles, a coloured bar on each)."""
    e = html.escape
    tiles = "".join(
        f'<div class="plc" style="border-top:5px solid {c.colour}"><div class="pll">{e(c.label)}</div>'
        f'<div class="plv">{e(c.value)}</div><div class="pln">{e(c.note)}</div></div>'
        for c in cs
    )
    style = (
        "<style>.plg{display:grid;grid-template-columns:repeat(5,1fr);gap:10px;font-family:"
        "system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}.plc{background:#fafbfc;border:1px solid "
        "#e1e4e8;border-radius:6px;padding:8px 12px}.pll{font-size:12px;color:#586069;text-transform:"
        "uppercase;letter-spacing:.04em}.plv{font-size:22px;font-weight:600;color:#24292e;margin:2px 0;"
        "white-space:nowrap;overflow:hidden;text-overflow:ellipsis}.pln{font-size:12px;color:#6a737d;"
        "white-space:nowrap;overflow:hidden;text-overflow:ellipsis}</style>"
    )
    return f'{style}<div class="plg">{tiles}</div>'


def findings_html(alerts: Sequence[Any], findings: Sequence[Any], top: int = 8) -> str:
    """The active alerts and the advisor's findings (with their fixes) as HTML lists."""
    e = html.escape
    box = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:13px;color:#24292e"

    def badge(sev: str) -> str:
        return (
            f'<span style="background:{SEVERITY.get(sev, NONE)};color:white;border-radius:3px;'
            f'padding:1px 6px;font-size:11px;margin-right:6px">{e(sev.upper())}</span>'
        )

    a_items = "".join(f"<li style='margin:4px 0'>{badge(a.severity)}{e(a.message)}</li>" for a in alerts)
    a_items = a_items or (f"<li style='margin:4px 0;color:{OK}'>&#10003; no alert firing</li>")
    f_items = "".join(
        f"<li style='margin:6px 0'>{badge(f.severity)}<b>{e(f.name)}</b>: {e(f.message)}<br>"
        f"<code style='background:#f3f4f6;padding:2px 4px;border-radius:3px;font-size:12px'>{e(f.fix)}</code>"
        "</li>"
        for f in list(findings)[:top]
    )
    f_items = f_items or f"<li style='color:{OK}'>&#10003; no findings: nothing to change</li>"
    more = (
        f"<p style='color:#6a737d'>... and {len(findings) - top} more (packlab advise)</p>"
        if len(findings) > top
        else ""
    )
    return (
        f"<div style='{box}'><h3 style='margin:4px 0'>Active alerts</h3><ul style='padding-left:18px;"
        f"margin:0'>{a_items}</ul><h3 style='margin:10px 0 4px'>Advisor findings</h3>"
        f"<ul style='padding-left:18px;margin:0'>{f_items}</ul>{more}</div>"
    )


def rule_threshold(rules: Iterable[Any], name: str) -> float | None:
    """The threshold of the alert rule named ``name`` (``None`` without one)."""
    return next((float(r.threshold) for r in rules if r.name == name), None)


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
    "money",
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
