"""Circuit breakers per function, and the jobs they hold back.

The admission loop asks :class:`Breakers` before it dispatches a job and tells it how
each attempt ended; this module decides what is held, when a probe runs and what is
released. It owns no thread: the loop calls it (and fires its timers).
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

from .retry import CLOSED, OPEN, CircuitBreaker


class Breakers:
    """One :class:`CircuitBreaker` per function name (made on its first failure) and the
    jobs of each open circuit, held in arrival order.

    Examples
    --------
    >>> from types import SimpleNamespace as J
    >>> b = Breakers(CircuitBreaker(threshold=1, cooldown=10))
    >>> b.failure("f", now=0.0)   # opens: returns when to probe
    10.0
    >>> job = J(fn_name="f")
    >>> b.allow(job, now=1.0), b.held_counts()
    (False, {'f': 1})
    >>> b.probe("f", now=10.0) is job, b.state("f")
    (True, 'half-open')
    >>> b.success("f", now=11.0)
    []
    """

    def __init__(self, template: CircuitBreaker) -> None:
        self.template = template
        self.by_fn: dict[str, CircuitBreaker] = {}
        self.held: dict[str, deque] = defaultdict(deque)

    def __getitem__(self, fn_name: str) -> CircuitBreaker:
        return self.by_fn[fn_name]

    def state(self, fn_name: str) -> str:
        br = self.by_fn.get(fn_name)
        return CLOSED if br is None else br.state

    def allow(self, job: Any, now: float) -> bool:
        """May ``job`` start now? If not, it is held until its circuit lets it go."""
        br = self.by_fn.get(job.fn_name)
        if br is None or br.allow(now):
            return True
        self.held[job.fn_name].append(job)
        return False

    def success(self, fn_name: str, now: float) -> list:
        """An attempt succeeded: close the circuit; return the jobs it releases."""
        br = self.by_fn.get(fn_name)
        if br is None:
            return []
        was = br.state
        br.success(now)
        if was == CLOSED:
            return []
        return list(self.held.pop(fn_name, None) or ())

    def failure(self, fn_name: str, now: float) -> float | None:
        """An attempt failed; if that opened the circuit, return when to probe."""
        br = self.by_fn.get(fn_name)
        if br is None:
            br = self.by_fn[fn_name] = self.template.fresh()
        was = br.state
        br.failure(now)
        return br.reopens_at() if br.state == OPEN and was != OPEN else None

    def abandon(self, fn_name: str, now: float) -> None:
        """An attempt was cancelled: a probe without a verdict lets the next job probe."""
        br = self.by_fn.get(fn_name)
        if br is not None:
            br.abandon(now)

    def probe(self, fn_name: str, now: float) -> Any | None:
        """The cooldown is over: the one held job to run as the probe, if any."""
        held = self.held.get(fn_name)
        if held and self.by_fn[fn_name].allow(now):
            return held.popleft()
        return None

    def forget(self, job: Any) -> None:
        """Drop a held job (it was cancelled)."""
        held = self.held.get(job.fn_name)
        if held and job in held:
            held.remove(job)

    def held_counts(self) -> dict[str, int]:
        return {fn: len(h) for fn, h in list(self.held.items()) if h}

    def stats(self) -> dict[str, dict]:
        return {fn: {"state": b.state, "failures": b.failures,
                     "reopens_at": b.reopens_at() if b.state != CLOSED else None}
                for fn, b in list(self.by_fn.items())}
