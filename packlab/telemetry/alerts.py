"""Alert rules over metric series, evaluated as a pure function, and the sinks they go to.

A :class:`Rule` names a metric, a condition over the last ``window`` of its series and a
threshold. :func:`evaluate` judges every rule at time ``now`` and returns the alerts to
send and the new state: a rule fires once when its condition starts to hold (no repeats
while it holds), resolves once when it clears, and does not fire again within
``cooldown`` of its last firing, so a flapping metric does not flood anyone. A rule
without enough data to judge keeps its state: missing data neither fires nor resolves.

The seed's rules, with their defaults in ``packlab.telemetry.alerts``, come from
:func:`default_rules`. The alerts go to the sinks of :mod:`packlab.telemetry.sinks`.

An :class:`AlertEvaluator` holds the state between calls: the one place alerts are judged
for a cluster or a store, shared by its monitors and its panel (:class:`packlab.Monitor`'s
``evaluator``), so they never disagree about what fires.

Examples
--------
>>> rule = Rule("busy", "utilisation", "above_for", 0.9, window=60, cooldown=0, min_samples=2)
>>> alerts, state = evaluate([rule], {"utilisation": [(0, 0.95), (30, 0.97), (60, 0.99)]}, now=60)
>>> [(a.rule, a.status) for a in alerts]
[('busy', 'firing')]
>>> alerts, state = evaluate([rule], {"utilisation": [(60, 0.99), (120, 0.2)]}, now=120, state=state)
>>> [(a.rule, a.status) for a in alerts]
[('busy', 'resolved')]
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from .. import checks, config
from ..errors import PacklabError, bad_value
from .series import Row, rows_of
from .trends import change, percentile, slope

log = logging.getLogger("packlab.alerts")

METRICS = {
    "queue_depth": "jobs waiting in the queue",
    "utilisation": "fraction of worker threads busy, 0 to 1",
    "job_duration": "seconds a job ran, one row per finished job",
    "job_failed": "1 for a job that ended failed, 0 for one that succeeded, one row per job",
    "cost_per_job": "what a finished job cost, one row per job",
}
"""The metrics a rule can watch, and what one row of each means."""

_FRACTIONS = {"utilisation", "job_failed"}
SEVERITIES = ("info", "warning", "critical")


def _in_window(rows: list[Row], now: float, window: float) -> list[Row]:
    return [r for r in rows if now - window <= r[0] <= now]


def _slope_above(rows, now, rule):
    recent = _in_window(rows, now, rule.window)
    if len(recent) < rule.min_samples or len({t for t, _ in recent}) < 2:
        return None
    return slope(recent)


def _level_for(pick):
    def judge(rows, now, rule):
        recent = _in_window(rows, now, rule.window)
        covered = rows and rows[0][0] <= now - rule.window  # history reaches back a whole window
        return pick(v for _, v in recent) if len(recent) >= rule.min_samples and covered else None
    return judge


def _stat_above(stat):
    def judge(rows, now, rule):
        recent = _in_window(rows, now, rule.window)
        return stat([v for _, v in recent]) if len(recent) >= rule.min_samples else None
    return judge


def _trend_above(rows, now, rule):
    cur = [v for t, v in rows if now - rule.window < t <= now]
    prev = [v for t, v in rows if now - 2 * rule.window < t <= now - rule.window]
    if len(cur) < rule.min_samples or len(prev) < rule.min_samples:
        return None
    return change(math.fsum(cur) / len(cur), math.fsum(prev) / len(prev))


CONDITIONS: dict[str, tuple[Callable[..., float | None], str, bool]] = {
    # name: (the observed value from the window, or None; how the message names it; fires above?)
    "slope_above": (_slope_above, "slope per second", True),
    "below_for": (_level_for(max), "highest value over the whole window", False),
    "above_for": (_level_for(min), "lowest value over the whole window", True),
    "p95_above": (_stat_above(lambda vs: percentile(vs, 95)), "p95", True),
    "mean_above": (_stat_above(lambda vs: math.fsum(vs) / len(vs)), "mean", True),
    "trend_above": (_trend_above, "change of the mean, window on window", True),
}
"""How a rule judges its window: the value it computes and the side it fires on."""


@dataclass(frozen=True)
class Rule:
    """One alert rule: ``condition`` over the last ``window`` of ``metric`` against ``threshold``.

    Parameters
    ----------
    name : str
        Unique among the rules evaluated together (alerts and state are keyed by it).
    metric : str
        One of :data:`METRICS`.
    condition : str
        One of :data:`CONDITIONS`: ``slope_above`` (least-squares slope, per second),
        ``below_for``/``above_for`` (every sample of a whole window), ``p95_above``,
        ``mean_above``, ``trend_above`` (relative change of the mean against the window
        before: 0.15 is up 15 %).
    threshold : float
        For the fraction metrics (utilisation, job_failed) a level is from 0 to 1.
    window, cooldown : float or str
        Seconds or a duration (``"5m"``); the window is positive.
    severity : {"info", "warning", "critical"}
    min_samples : int
        Rows needed in the window before the rule judges it.

    Examples
    --------
    >>> Rule("slow", "job_duraton", "p95_above", 60)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: metric='job_duraton' is invalid: ... Did you mean 'job_duration'?
    """

    name: str
    metric: str
    condition: str
    threshold: float
    window: float | str = 300.0
    cooldown: float | str = 900.0
    severity: str = "warning"
    min_samples: int = 3

    def __post_init__(self) -> None:
        checks.text(self.name, "name")
        checks.choice(self.metric, "metric", METRICS)
        checks.choice(self.condition, "condition", CONDITIONS)
        threshold = checks.number(self.threshold, "threshold")
        if self.metric in _FRACTIONS and self.condition not in ("slope_above", "trend_above") and not (
                0 <= threshold <= 1):
            raise bad_value("threshold", self.threshold, f"a fraction from 0 to 1 for {self.metric}",
                            "For 50 % write 0.5.")
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "window", checks.duration(self.window, "window", allow_zero=False))
        object.__setattr__(self, "cooldown", checks.duration(self.cooldown, "cooldown"))
        checks.choice(self.severity, "severity", SEVERITIES)
        object.__setattr__(self, "min_samples", checks.integer(self.min_samples, "min_samples", minimum=1))


def default_rules() -> list[Rule]:
    """The seed's rules, their thresholds from ``packlab.telemetry.alerts``.

    Examples
    --------
    >>> [r.name for r in default_rules()]  # doctest: +NORMALIZE_WHITESPACE
    ['queue-depth-growing', 'utilisation-low', 'utilisation-high', 'job-duration-sla',
     'failure-rate', 'cost-per-job-up']
    """
    keys = ("window", "cooldown", "utilisation-low", "utilisation-high", "duration-sla", "failure-rate",
            "cost-trend")
    s = {k: config.get(f"telemetry.alerts.{k}") for k in keys}  # key by key: ``_`` and ``-`` alike
    w, c = s["window"], s["cooldown"]
    return [
        Rule("queue-depth-growing", "queue_depth", "slope_above", 0.0, w, c, "warning"),
        Rule("utilisation-low", "utilisation", "below_for", s["utilisation-low"], w, c, "info"),
        Rule("utilisation-high", "utilisation", "above_for", s["utilisation-high"], w, c, "warning"),
        Rule("job-duration-sla", "job_duration", "p95_above", checks.duration(
            s["duration-sla"], "packlab.telemetry.alerts.duration-sla"), w, c, "warning"),
        Rule("failure-rate", "job_failed", "mean_above", s["failure-rate"], w, c, "critical"),
        Rule("cost-per-job-up", "cost_per_job", "trend_above", s["cost-trend"], w, c, "info"),
    ]


@dataclass(frozen=True)
class Alert:
    """A rule that started (``status="firing"``) or stopped (``"resolved"``) holding."""

    rule: str
    status: str
    metric: str
    value: float
    threshold: float
    severity: str
    at: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The alert as JSON-ready data (what a webhook receives)."""
        return asdict(self)


@dataclass(frozen=True)
class RuleState:
    """Where one rule stands: whether a firing alert is out (``announced``) and when the
    last one was sent (``last_fired``, for the cooldown)."""

    announced: bool = False
    last_fired: float | None = None


def evaluate(rules: Sequence[Rule], series: Mapping[str, Iterable[Row]], now: float,
             state: Mapping[str, RuleState] | None = None) -> tuple[list[Alert], dict[str, RuleState]]:
    """Judge every rule at ``now``: the alerts to send, and the state to pass next time.

    Parameters
    ----------
    rules : list of Rule
    series : dict of metric name to (timestamp, value) rows
        A metric with no rows leaves its rules' state as it was.
    now : float
    state : dict of rule name to RuleState, optional
        What the last call returned (``None`` the first time).

    Examples
    --------
    >>> r = Rule("fails", "job_failed", "mean_above", 0.1, window=60, cooldown=600)
    >>> fails = [(t, 1) for t in range(0, 60, 10)]
    >>> a, s = evaluate([r], {"job_failed": fails}, now=60)
    >>> a[0].message
    'fails: job_failed mean 1 is above 0.1 (window 60 s)'
    >>> evaluate([r], {"job_failed": fails}, now=61, state=s)[0]  # still failing: no repeat
    []
    """
    now = checks.number(now, "now")
    rules = _rules(rules)
    if not isinstance(series, Mapping):
        raise bad_value("series", series, "a dict of metric name to (timestamp, value) rows",
                        'E.g. {"queue_depth": [(t0, 3), (t1, 5)]}.')
    for name in series:
        checks.choice(name, "series key", METRICS)
    data = {name: rows_of(rows, f"series[{name!r}]") for name, rows in series.items()}
    old = _state(state)
    alerts, new = [], {}
    for rule in rules:
        st = old.get(rule.name, RuleState())
        judge, what, fires_above = CONDITIONS[rule.condition]
        value = judge(data.get(rule.metric, []), now, rule)
        if value is None:  # not enough data to judge: nothing changes
            new[rule.name] = st
            continue
        holds = value > rule.threshold if fires_above else value < rule.threshold
        if holds and not st.announced and (st.last_fired is None or now - st.last_fired >= rule.cooldown):
            alerts.append(_alert(rule, "firing", value, now, what, fires_above))
            st = RuleState(announced=True, last_fired=now)
        elif not holds and st.announced:
            alerts.append(_alert(rule, "resolved", value, now, what, fires_above))
            st = replace(st, announced=False)
        new[rule.name] = st
    return alerts, new


class AlertEvaluator:
    """The firing state of the alert rules of one cluster or store, judged by :func:`evaluate`
    at each :meth:`check`, and the sinks its alerts go to.

    Whoever checks (a monitor's alert thread, :meth:`packlab.Monitor.check_alerts`, the
    panel's reads) updates this one state and sends what fires or resolves to ``sinks``,
    so an alert fires once however many read it. A rule not judged in a check (another
    caller's rules) keeps its state.

    Examples
    --------
    >>> ev = AlertEvaluator()
    >>> rule = Rule("busy", "utilisation", "above_for", 0.9, window=60, cooldown=0, min_samples=2)
    >>> busy = {"utilisation": [(0, 0.95), (30, 0.97), (60, 0.99)]}
    >>> [(a.rule, a.status) for a in ev.check([rule], lambda window: busy, now=60)]
    [('busy', 'firing')]
    >>> ev.check([rule], lambda window: busy, now=61), list(ev.firing)  # still busy: no repeat
    ([], ['busy'])
    >>> ev.firing["busy"].message
    'busy: utilisation lowest value over the whole window 0.95 is above 0.9 (window 60 s)'
    """

    def __init__(self) -> None:
        self.sinks: list[Any] = []
        self._lock = threading.Lock()
        self._state: dict[str, RuleState] = {}
        self._firing: dict[str, Alert] = {}  # the firing alert of each announced rule

    @property
    def state(self) -> dict[str, RuleState]:
        """Each rule's :class:`RuleState` (a copy)."""
        with self._lock:
            return dict(self._state)

    @property
    def firing(self) -> dict[str, Alert]:
        """The rules firing now (announced, not resolved), by name: the alert each fired with."""
        with self._lock:
            return {n: self._firing[n] for n in sorted(self._firing)}

    def check(self, rules: Sequence[Rule], series: Callable[[float], Mapping[str, Iterable[Row]]],
              now: float) -> list[Alert]:
        """Judge ``rules`` at ``now`` over ``series(window)`` (the rows of the last
        ``window`` seconds: twice the longest rule window), send the alerts to the sinks;
        the alerts."""
        rules = _rules(rules)
        window = max((r.window for r in rules), default=300.0) * 2
        data = series(window)
        with self._lock:
            alerts, new = evaluate(rules, data, now, self._state)
            self._state = {**self._state, **new}
            self._firing = {a.rule: a for a in alerts if a.status == "firing"} | {
                k: v for k, v in self._firing.items() if self._state[k].announced}
            sinks = list(self.sinks)
        if alerts and sinks:
            from .sinks import deliver  # the sinks module builds on this one

            deliver(alerts, sinks)
        return alerts


def _alert(rule: Rule, status: str, value: float, now: float, what: str, above: bool) -> Alert:
    side = ("is above" if above else "is below") if status == "firing" else (
        "is back under" if above else "is back over")
    msg = (f"{rule.name}: {rule.metric} {what} {value:.3g} {side} {rule.threshold:g} "
           f"(window {rule.window:g} s)")
    return Alert(rule.name, status, rule.metric, value, rule.threshold, rule.severity, now, msg)


def _rules(rules: object) -> list[Rule]:
    if isinstance(rules, (str, bytes, Mapping, Rule)) or not isinstance(rules, Iterable):
        raise bad_value("rules", rules, "a list of Rule", "E.g. packlab.telemetry.alerts.default_rules().")
    out = list(rules)
    seen = set()
    for i, r in enumerate(out):
        if not isinstance(r, Rule):
            raise bad_value(f"rules[{i}]", r, "a Rule", 'E.g. Rule("busy", "utilisation", "above_for", 0.9).')
        if r.name in seen:
            raise PacklabError(f"rules: two rules are named {r.name!r}: names key the alerts and their "
                               "state, so give each rule its own.", field="rules", value=r.name)
        seen.add(r.name)
    return out


def _state(state: object) -> dict[str, RuleState]:
    if state is None:
        return {}
    if not isinstance(state, Mapping) or not all(isinstance(v, RuleState) for v in state.values()):
        raise bad_value("state", state, "the state dict the previous evaluate() returned (or None)")
    return dict(state)
