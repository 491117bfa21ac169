"""Time series of samples: a bounded ring buffer and downsampling by age.

A series is a sequence of ``(timestamp, value)`` rows, timestamps in seconds (Unix time
or any monotonic clock: only differences matter). Every function here is pure, so the
store's downsampling job, the monitor and the alert rules share one tested definition.

The downsampling policy keeps one row per second for the last hour, one per minute for
the last week and one per hour beyond (``packlab.telemetry.history``), so a series held
for ever stays bounded: :func:`max_rows` says how many rows it can reach. Percentiles,
slopes and trend lines are in :mod:`packlab.telemetry.trends`.

Examples
--------
>>> downsample([(0, 1.0), (30, 3.0), (7200, 5.0)], now=7200.5)
[(0.0, 2.0), (7200.0, 5.0)]
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence

from .. import checks, config
from ..errors import bad_value

Row = tuple[float, float]

AGGREGATIONS = {
    "mean": lambda vs: math.fsum(vs) / len(vs),
    "max": max,
    "min": min,
    "last": lambda vs: vs[-1],
    "sum": math.fsum,
}
"""How the rows of one bucket become one row, by name."""

METRIC_KINDS = {
    "gauge": "mean",    # a level sampled now and then: CPU use, utilisation, queue depth
    "peak": "max",      # a high-water mark: peak memory; the bucket keeps its highest
    "counter": "last",  # a running total: bytes spilled, busy seconds; the latest is the total
}
"""The aggregation for each kind of metric."""


class RingBuffer:
    """The last ``capacity`` samples of one series; older ones are dropped, and counted.

    Examples
    --------
    >>> b = RingBuffer(2)
    >>> for t in range(3):
    ...     b.append(t, t * 10)
    >>> b.rows(), b.dropped
    ([(1.0, 10.0), (2.0, 20.0)], 1)
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = checks.integer(capacity, "capacity", minimum=1)
        self._rows: deque[Row] = deque(maxlen=self.capacity)
        self.dropped = 0

    def append(self, t: float, value: float) -> None:
        """Add one sample (both finite numbers)."""
        row = (checks.number(t, "t"), checks.number(value, "value"))
        if len(self._rows) == self.capacity:
            self.dropped += 1
        self._rows.append(row)

    def drain(self) -> list[Row]:
        """All rows held, oldest first, and empty the buffer (a batch for the store)."""
        out = list(self._rows)
        self._rows.clear()
        return out

    def rows(self) -> list[Row]:
        """All rows held, oldest first."""
        return list(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


def rows_of(rows: object, field: str = "rows") -> list[Row]:
    """``rows`` checked (an iterable of ``(timestamp, value)`` pairs of finite numbers) and
    sorted by time.

    Examples
    --------
    >>> rows_of([(2, 1), (1, 5)])
    [(1.0, 5.0), (2.0, 1.0)]
    >>> rows_of([(1, "x")])
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: rows[0][1]='x' is invalid: expected a finite number.
    """
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
        raise bad_value(field, rows, "a list of (timestamp, value) pairs")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, Sequence) or isinstance(row, str) or len(row) != 2:
            raise bad_value(f"{field}[{i}]", row, "a (timestamp, value) pair")
        out.append((checks.number(row[0], f"{field}[{i}][0]"), checks.number(row[1], f"{field}[{i}][1]")))
    out.sort(key=lambda r: r[0])
    return out


def history_tiers() -> list[tuple[float, float]]:
    """The downsampling policy from ``packlab.telemetry.history``: ``(max_age, resolution)``
    tiers, youngest first, the last one unbounded.

    Examples
    --------
    >>> history_tiers()
    [(3600.0, 1.0), (604800.0, 60.0), (inf, 3600.0)]
    """
    per_second, per_minute = (
        checks.duration(config.get(f"telemetry.history.{k}"), f"packlab.telemetry.history.{k}")
        for k in ("per-second", "per-minute"))
    return _check_tiers([(per_second, 1.0), (max(per_second, per_minute), 60.0), (math.inf, 3600.0)])


def _check_tiers(tiers: object) -> list[tuple[float, float]]:
    expected = "a list of (max_age, resolution) pairs, ages increasing, the last age inf"
    if isinstance(tiers, (str, bytes)) or not isinstance(tiers, Iterable):
        raise bad_value("tiers", tiers, expected)
    out = []
    for i, tier in enumerate(tiers):
        if not isinstance(tier, Sequence) or isinstance(tier, str) or len(tier) != 2:
            raise bad_value(f"tiers[{i}]", tier, "a (max_age, resolution) pair")
        age, res = tier
        if checks.real(age) == math.inf:
            age = math.inf
        else:
            age = checks.number(age, f"tiers[{i}][0]", minimum=0)
        out.append((age, checks.number(res, f"tiers[{i}][1]", above=0)))
    if not out or out[-1][0] != math.inf or any(a[0] > b[0] for a, b in itertools.pairwise(out)):
        raise bad_value("tiers", tiers, expected, "E.g. [(3600, 1), (604800, 60), (float('inf'), 3600)].")
    if any(b[1] % a[1] for a, b in itertools.pairwise(out)):
        raise bad_value("tiers", tiers, "resolutions that are each a multiple of the one before",
                        "E.g. 1 s, 60 s, 3600 s: then buckets nest.")
    return out


def downsample(rows: Iterable[Row], now: float, *, how: str = "mean",
               tiers: Sequence[tuple[float, float]] | None = None) -> list[Row]:
    """Rows merged into one per bucket, the bucket's width set by its age.

    Buckets are aligned on multiples of their resolution (``floor(t / resolution)``),
    and each tier's resolution is a multiple of the one before, so buckets nest. A row
    goes to the coarsest tier whose bucket around it lies wholly beyond that tier's
    starting age (the previous tier's ``max_age``): a bucket is never split between two
    tiers, and downsampling the result again at the same ``now`` changes nothing. Each
    bucket becomes one row at the bucket's start, its value the ``how`` aggregation
    (:data:`AGGREGATIONS`) of its rows. Rows from the future stay at the finest resolution.

    Parameters
    ----------
    rows : iterable of (timestamp, value)
    now : float
        The time ages are measured from.
    how : {"mean", "max", "min", "last", "sum"}
        Use :func:`aggregation_for` to pick it from the metric's kind.
    tiers : list of (max_age, resolution), optional
        Default :func:`history_tiers` (1 s for an hour, 1 min for a week, 1 h beyond).

    Examples
    --------
    >>> downsample([(0, 1), (10, 5), (20, 2)], now=10_000, how="max", tiers=[(float("inf"), 60)])
    [(0.0, 5.0)]
    """
    now = checks.number(now, "now")
    agg = AGGREGATIONS[checks.choice(how, "how", AGGREGATIONS)]
    tiers = history_tiers() if tiers is None else _check_tiers(tiers)
    steps = list(itertools.pairwise(tiers))  # (tier before, tier): the tier starts at the age before
    buckets: dict[tuple[float, int], list[float]] = {}
    for t, v in rows_of(rows):
        res = tiers[0][1]
        for (start_age, _), (_, coarser) in steps:
            if now - (math.floor(t / coarser) + 1) * coarser < start_age:
                break
            res = coarser
        buckets.setdefault((res, math.floor(t / res)), []).append(v)
    out = [(float(k * res), float(agg(vs))) for (res, k), vs in buckets.items()]
    out.sort(key=lambda r: r[0])
    return out


def aggregation_for(kind: str) -> str:
    """The aggregation for a metric kind (:data:`METRIC_KINDS`).

    Examples
    --------
    >>> aggregation_for("peak")
    'max'
    """
    return METRIC_KINDS[checks.choice(kind, "kind", METRIC_KINDS)]


def max_rows(span: float, tiers: Sequence[tuple[float, float]] | None = None) -> int:
    """The most rows :func:`downsample` keeps of a series whose oldest row is ``span``
    seconds old (rows later than the time measured from are not counted).

    A tier from age ``A`` to ``B`` at resolution ``r``, the next one at ``R``, holds
    buckets ending at least ``A`` ago whose ``R``-bucket is not yet wholly beyond ``B``:
    at most ``ceil((B - A + R) / r) + 1`` of them.

    Examples
    --------
    >>> max_rows(30 * 86400)  # a month: 3661 + 10081 + 553 rows at most
    14295
    """
    span = checks.number(span, "span", minimum=0)
    tiers = history_tiers() if tiers is None else _check_tiers(tiers)
    total, start = 0, 0.0
    for i, (max_age, res) in enumerate(tiers):
        nxt = tiers[i + 1][1] if i + 1 < len(tiers) else 0.0
        stop = min(max_age, span)
        total += math.ceil((stop - start + (nxt if max_age <= span else 0.0)) / res) + 1
        if max_age > span:
            break
        start = max_age
    return total


def select(rows: Iterable[Row], since: float | None = None, until: float | None = None) -> list[Row]:
    """The rows with ``since <= t <= until`` (either bound may be ``None``).

    Examples
    --------
    >>> select([(1, 1), (2, 2), (3, 3)], since=2)
    [(2.0, 2.0), (3.0, 3.0)]
    >>> select([], since=5, until=1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: since=5 is invalid: expected a time no later than until=1...
    """
    lo = -math.inf if since is None else checks.number(since, "since")
    hi = math.inf if until is None else checks.number(until, "until")
    if lo > hi:
        raise bad_value("since", since, f"a time no later than until={until!r}", "Swap the two.")
    return [r for r in rows_of(rows) if lo <= r[0] <= hi]
