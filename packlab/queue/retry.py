"""Retry decisions as small pure objects: the backoff schedule, the retry budget, the
circuit breaker. None of them sleeps or talks to Dask; the queue asks them and acts.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from distributed import KilledWorker
from distributed.client import FutureCancelledError

from .. import checks, config
from ..errors import PacklabError, bad_value
from ..units import seconds
from .job import JobTimeout

#: Failures of the machinery, not of the job's code: always transient.
LOST = (KilledWorker, FutureCancelledError, JobTimeout)
_BACKOFFS = ("exponential", "linear", "constant")


def _exc_types(value: Any, field_name: str) -> tuple[type[BaseException], ...]:
    if isinstance(value, type):
        value = (value,)
    try:
        types = tuple(value)
    except TypeError:
        raise bad_value(field_name, value, "an exception type or a tuple of them") from None
    for t in types:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise bad_value(field_name, value, "exception types such as (ConnectionError, TimeoutError)")
    return types


@dataclass(frozen=True)
class Retry:
    """How a job is retried: attempts, capped backoff with full jitter, and which errors
    are transient (``on``) or permanent (``give_up_on``).

    Attempt ``n`` (1-based) that fails waits ``min(cap, base * 2**(n-1))`` for
    exponential backoff (``base * n`` linear, ``base`` constant); with ``jitter`` the
    wait is drawn uniformly from ``[0, that]`` ("full jitter"), which spreads a burst of
    failures out. The wait happens in the queue, not on a worker.

    Errors in ``give_up_on`` go straight to the dead-letter queue. A lost worker
    (``KilledWorker``, e.g. a preempted SLURM job) and a timeout are always transient.
    Other errors are retried when they match ``on``, else the job ends ``failed``.

    Examples
    --------
    >>> r = Retry(attempts=4, base="1s", cap="3s", jitter=False)
    >>> r.schedule()
    [1.0, 2.0, 3.0]
    >>> r.classify(ConnectionError()), Retry(give_up_on=(ValueError,)).classify(ValueError())
    ('retry', 'dead')
    """

    attempts: int = 5
    backoff: str = "exponential"
    base: float | str = "1s"
    cap: float | str = "60s"
    jitter: bool = True
    on: Any = (Exception,)
    give_up_on: Any = ()

    def __post_init__(self) -> None:
        checks.integer(self.attempts, "attempts", minimum=1)  # 1: no retry
        if self.backoff not in _BACKOFFS:
            raise bad_value("backoff", self.backoff, f"one of {list(_BACKOFFS)}")
        object.__setattr__(self, "base", seconds(self.base, "base"))
        object.__setattr__(self, "cap", seconds(self.cap, "cap"))
        if self.cap < self.base:
            raise PacklabError(f"cap={self.cap} is below base={self.base}: "
                               "the cap must be at least the base.")
        if not isinstance(self.jitter, bool):
            raise bad_value("jitter", self.jitter, "True or False")
        object.__setattr__(self, "on", _exc_types(self.on, "on"))
        object.__setattr__(self, "give_up_on", _exc_types(self.give_up_on, "give_up_on"))

    @classmethod
    def from_config(cls) -> Retry:
        """The default retry of ``packlab.queue.retry`` in dask.config."""
        c = config.get("queue.retry")
        return cls(attempts=int(c["attempts"]), backoff=c["backoff"], base=c["base"], cap=c["cap"],
                   jitter=bool(c["jitter"]))

    def ceiling(self, failed: int) -> float:
        """The longest wait after the ``failed``-th failed attempt (the schedule)."""
        if self.backoff == "constant":
            d = self.base
        elif self.backoff == "linear":
            d = self.base * failed
        else:
            d = self.base * 2.0 ** min(failed - 1, 64)
        return min(self.cap, d)

    def delay(self, failed: int, rng: random.Random | None = None) -> float:
        """The wait before the next attempt, after ``failed`` failed attempts."""
        d = self.ceiling(failed)
        return (rng or random).uniform(0.0, d) if self.jitter else d

    def schedule(self) -> list[float]:
        """The longest wait before each retry, in order."""
        return [self.ceiling(n) for n in range(1, self.attempts)]

    def classify(self, exc: BaseException) -> str:
        """``"dead"`` (permanent), ``"retry"`` (transient) or ``"fail"`` (neither)."""
        if self.give_up_on and isinstance(exc, self.give_up_on):
            return "dead"
        if isinstance(exc, LOST) or isinstance(exc, self.on):
            return "retry"
        return "fail"


def as_retry(retry: Retry | int | bool | None, default: Retry | None) -> Retry | None:
    """Normalize the ``retry=`` argument: a Retry, ``None`` (the default), ``False``
    (one attempt) or an int (that many attempts with the default backoff).

    Examples
    --------
    >>> as_retry(False, None).attempts
    1
    """
    if retry is None:
        return default
    if isinstance(retry, Retry):
        return retry
    if retry is False:
        return Retry(attempts=1)
    if isinstance(retry, int) and not isinstance(retry, bool):
        base = default or Retry()
        return Retry(attempts=retry, backoff=base.backoff, base=base.base, cap=base.cap,
                     jitter=base.jitter, on=base.on, give_up_on=base.give_up_on)
    raise bad_value("retry", retry, "a packlab.Retry, a number of attempts, False or None")


class RetryBudget:
    """Retries may not exceed ``ratio`` of the submissions in the last ``window``
    (at least ``minimum`` retries per window are always allowed).

    Counts live in one-second buckets, so memory stays bounded however many jobs pass.

    Examples
    --------
    >>> b = RetryBudget(ratio=0.5, window=10, minimum=0)
    >>> for _ in range(4): b.submitted(now=0.0)
    >>> [b.acquire(now=1.0) for _ in range(3)]
    [True, True, False]
    """

    def __init__(self, ratio: float | None = None, window: float | str | None = None,
                 minimum: int | None = None) -> None:
        c = config.get("queue.retry-budget")
        r = c["ratio"] if ratio is None else ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < math.inf:
            raise bad_value("ratio", ratio, "a fraction of submissions, 0 or more (e.g. 0.2)")
        self.ratio = float(r)
        self.window = seconds(c["window"] if window is None else window, "window", allow_zero=False)
        self.minimum = checks.integer(int(c["minimum"]) if minimum is None else minimum, "minimum", minimum=0)
        self._buckets: deque[list] = deque()  # [second, submissions, retries]
        self.refused = 0

    def _bucket(self, now: float) -> list:
        sec = int(now)
        while self._buckets and self._buckets[0][0] <= now - self.window:
            self._buckets.popleft()
        if not self._buckets or self._buckets[-1][0] != sec:
            self._buckets.append([sec, 0, 0])
        return self._buckets[-1]

    def submitted(self, now: float, n: int = 1) -> None:
        self._bucket(now)[1] += n

    def _totals(self, now: float) -> tuple[int, int]:
        self._bucket(now)
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    def acquire(self, now: float) -> bool:
        """Take one retry from the budget; ``False`` when the budget is spent."""
        subs, retries = self._totals(now)
        if retries < max(self.minimum, self.ratio * subs):
            self._bucket(now)[2] += 1
            return True
        self.refused += 1
        return False

    def stats(self, now: float) -> dict[str, Any]:
        subs, retries = self._totals(now)
        return {"ratio": self.ratio, "window_s": self.window, "submissions": subs, "retries": retries,
                "allowed": max(self.minimum, int(self.ratio * subs)), "refused": self.refused}


CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass
class CircuitBreaker:
    """Per function: after ``threshold`` consecutive failures the circuit opens and the
    function's jobs are held (not failed) for ``cooldown``; then a single probe runs:
    success closes the circuit, failure opens it again.

    Examples
    --------
    >>> cb = CircuitBreaker(threshold=2, cooldown=10)
    >>> cb.failure(now=0); cb.failure(now=1); cb.state
    'open'
    >>> cb.allow(now=5), cb.allow(now=11), cb.state, cb.allow(now=11)
    (False, True, 'half-open', False)
    >>> cb.success(now=12); cb.state
    'closed'
    """

    threshold: int = 5
    cooldown: float | str = 30.0
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    transitions: list = field(default_factory=list)

    def __post_init__(self) -> None:
        checks.integer(self.threshold, "threshold", minimum=1)  # consecutive failures
        self.cooldown = seconds(self.cooldown, "cooldown")

    @classmethod
    def from_config(cls) -> CircuitBreaker:
        c = config.get("queue.breaker")
        return cls(threshold=int(c["threshold"]), cooldown=c["cooldown"])

    def fresh(self) -> CircuitBreaker:
        """A closed breaker with the same settings (one per function)."""
        return CircuitBreaker(self.threshold, self.cooldown)

    def _go(self, state: str, now: float) -> None:
        self.transitions.append((now, self.state, state))
        self.state = state

    def reopens_at(self) -> float:
        return self.opened_at + self.cooldown

    def allow(self, now: float) -> bool:
        """May a job of this function start now? (Half-open: only the one probe.)"""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and now >= self.reopens_at():
            self._go(HALF_OPEN, now)
            return True
        return False

    def success(self, now: float) -> None:
        self.failures = 0
        if self.state != CLOSED:
            self._go(CLOSED, now)

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
            self.opened_at = now
            self._go(OPEN, now)

    def abandon(self, now: float) -> None:
        """The probe ended without a verdict (cancelled): let the next job probe."""
        if self.state == HALF_OPEN:
            self._go(OPEN, now)
            self.opened_at = now - self.cooldown
