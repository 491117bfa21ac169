"""Statistics of a series: percentiles, the least-squares slope, and trend lines.

Pure functions, shared by the alert rules, the monitor's snapshot and the report, so
"p95" and "up 15 %" mean the same everywhere.

Examples
--------
>>> percentile([1, 2, 3, 4], 50)
2.5
>>> describe_change("Avg duration", 12.5, 15, unit="min")
'Avg duration 12.5 min, down from 15'
>>> describe_trend("Cost trend", 1.15, 1.0)
'Cost trend up 15 %'
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .. import checks
from ..errors import bad_value
from .series import Row, rows_of


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, as ``numpy.percentile``.

    Examples
    --------
    >>> percentile([10, 20, 30, 40, 50], 95)
    48.0
    """
    q = checks.number(q, "q", minimum=0, maximum=100)
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise bad_value("values", values, "a list of numbers")
    xs = sorted(checks.number(v, f"values[{i}]") for i, v in enumerate(values))
    if not xs:
        raise bad_value("values", [], "at least one number", "A percentile of no values is undefined.")
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def slope(rows: Iterable[Row]) -> float:
    """The least-squares slope of value over time (value units per second).

    Examples
    --------
    >>> slope([(0, 1), (10, 3), (20, 5)])
    0.2
    """
    pts = rows_of(rows)
    if len(pts) < 2:
        raise bad_value("rows", pts, "at least two rows", "A slope needs two points in time.")
    n = len(pts)
    mt = math.fsum(t for t, _ in pts) / n
    mv = math.fsum(v for _, v in pts) / n
    var = math.fsum((t - mt) ** 2 for t, _ in pts)
    if var == 0:
        raise bad_value("rows", pts[:3], "rows at two or more distinct times")
    return math.fsum((t - mt) * (v - mv) for t, v in pts) / var


def change(current: float, previous: float) -> float | None:
    """The relative change from ``previous`` to ``current`` (0.15 is up 15 %), ``None``
    when ``previous`` is 0.

    Examples
    --------
    >>> change(115, 100)
    0.15
    """
    cur, prev = checks.number(current, "current"), checks.number(previous, "previous")
    return None if prev == 0 else round((cur - prev) / abs(prev), 12)


def describe_change(label: str, current: float, previous: float, *, unit: str = "") -> str:
    """``"Avg duration 12.5 min, down from 15"``: the level now and the one before.

    Examples
    --------
    >>> describe_change("Jobs per hour", 40, 40)
    'Jobs per hour 40, unchanged'
    """
    label = checks.text(label, "label")
    cur, prev = checks.number(current, "current"), checks.number(previous, "previous")
    u = f" {unit}" if unit else ""
    if math.isclose(cur, prev, rel_tol=1e-9, abs_tol=1e-12):
        return f"{label} {cur:g}{u}, unchanged"
    return f"{label} {cur:g}{u}, {'up' if cur > prev else 'down'} from {prev:g}"


def describe_trend(label: str, current: float, previous: float) -> str:
    """``"Cost trend up 15 %"``: the relative change, rounded to a whole percent.

    Examples
    --------
    >>> describe_trend("Cost trend", 1.15, 1.0)
    'Cost trend up 15 %'
    >>> describe_trend("Cost trend", 2.0, 0)
    'Cost trend: no earlier value to compare'
    """
    label = checks.text(label, "label")
    rel = change(current, previous)
    if rel is None:
        return f"{label}: no earlier value to compare"
    pct = round(abs(rel) * 100)
    if pct == 0:
        return f"{label} flat"
    return f"{label} {'up' if rel > 0 else 'down'} {pct} %"
