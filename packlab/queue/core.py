"""The engine's pure core: decisions from state and an event, with no Dask, no SQLite and
no threads (in the manner of ``cooldown_decision`` in ``clusters/adaptive.py``).

The driver thread (:mod:`.engine`) feeds it and carries its decisions out: how many
jobs to hand to Dask now (:func:`refill`), how deep the pipeline is (:func:`capacity`),
and what a failed attempt becomes (:func:`after_failure`). The state machine that
uses them is :class:`.machine.StateMachine`; the messages the driver thread receives, the
events the state machine takes, the decisions it returns and its timer kinds are typed
here.

Examples
--------
>>> refill(cap=16, running=12), refill(cap=16, running=4)
(0, 12)
>>> capacity(threads=2, factor=8, mean_runtime=0.0001, samples=500)
64
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .states import DEAD, FAILED, RETRYING, Kind

#: A pipeline this many times deeper while recent jobs are short (see :func:`capacity`).
DEEPEN = 4
SHORT_JOB = 0.002  # s: a job this short keeps a deeper pipeline busy without hoarding work
SAMPLES = 100  # finished attempts seen before the pipeline deepens


def capacity(threads: int, factor: int, mean_runtime: float | None = None, samples: int = 0) -> int:
    """``max_in_flight`` when not fixed: the cluster's threads (at least 1, so an adaptive
    cluster at zero workers still sees demand) times ``factor``; ``DEEPEN`` times that
    once ``SAMPLES`` attempts ran shorter than ``SHORT_JOB`` on average: tiny jobs need
    more on Dask at once to amortise each hand-over, long ones do not (a deep pipeline of
    long jobs would commit the policy's order far ahead).

    Examples
    --------
    >>> capacity(0, 8), capacity(3, 8, mean_runtime=1.0, samples=500)
    (8, 24)
    """
    cap = max(1, threads) * factor
    if short_jobs(mean_runtime, samples):
        cap *= DEEPEN
    return cap


def short_jobs(mean_runtime: float | None, samples: int) -> bool:
    """Whether recent jobs are tiny (``SAMPLES`` attempts seen, shorter than ``SHORT_JOB``
    on average): then the pipeline deepens (:func:`capacity`) and the engine spreads each
    hand-over over the workers itself (:mod:`.spread`).

    >>> short_jobs(0.0001, 500), short_jobs(0.0001, 5), short_jobs(1.0, 500), short_jobs(None, 0)
    (True, False, False, False)
    """
    return mean_runtime is not None and samples >= SAMPLES and mean_runtime < SHORT_JOB


def refill(cap: int, running: int) -> int:
    """How many jobs to hand to Dask now: none while more than half the slots are busy
    (each hand-over costs the scheduler a graph update, and half the slots still keep the
    workers busy), else every free slot.

    Examples
    --------
    >>> refill(1, 0), refill(1, 1), refill(8, 5), refill(8, 4)
    (1, 0, 0, 4)
    """
    room = cap - running
    if running and room < cap // 2:
        return 0
    return max(0, room)


def fetch_enough(cap: int, running: int) -> int:
    """How many finished attempts start a result fetch at once (fewer wait a few
    milliseconds for company): half the pipeline while other attempts still run, since
    more finish meanwhile and one gather serves them all; one when none runs, since no
    company is coming (a lone job's result, e.g. a pipeline stage, is fetched at once).

    Examples
    --------
    >>> fetch_enough(64, running=40), fetch_enough(64, running=0), fetch_enough(1, running=1)
    (32, 1, 1)
    """
    return max(1, cap // 2) if running else 1


@dataclass(frozen=True)
class Outcome:
    """What a failed attempt becomes: its new ``status``, the time of its next attempt
    (when retrying), the events to record, and whether that retry starts late."""

    status: str
    next_attempt: float | None
    events: tuple[tuple[str, str], ...]
    late: bool = False


def after_failure(retry: Any, exc: BaseException, attempts: int, now: float, deadline: float | None,
                  error: str) -> Outcome:
    """Decide a failed attempt's fate from its ``Retry`` and exception.

    Examples
    --------
    >>> from packlab.queue import Retry
    >>> o = after_failure(Retry(attempts=2, base=1, jitter=False), OSError("x"), 1, 10.0, None, "OSError: x")
    >>> o.status, o.next_attempt, [k for k, _ in o.events]
    ('retrying', 11.0, ['failed', 'retrying'])
    >>> after_failure(Retry(attempts=2, base=1), OSError("x"), 2, 10.0, None, "OSError: x").status
    'dead'
    """
    failed = (Kind.FAILED, f"attempt {attempts}: {error}")
    verdict = retry.classify(exc)
    if verdict == "retry" and attempts < retry.attempts:
        delay = retry.delay(attempts)
        nxt = now + delay
        return Outcome(RETRYING, nxt, (failed, (Kind.RETRYING, f"in {delay:.3f} s: attempt {attempts + 1} of "
                                                                f"{retry.attempts}")),
                       late=deadline is not None and nxt > deadline)
    if verdict == "fail":
        return Outcome(FAILED, None, (failed, (Kind.FAILED_FINAL,
                                               f"{type(exc).__name__} is not retried (not in Retry.on)")))
    why = "a permanent error (Retry.give_up_on)" if verdict == "dead" else f"{attempts} attempts exhausted"
    return Outcome(DEAD, None, (failed, (Kind.DEAD, f"dead-letter queue: {why}")))


def mean(prev: float | None, x: float, weight: float = 0.05) -> float:
    """An exponentially weighted mean (of attempt run times).

    Examples
    --------
    >>> mean(None, 2.0), mean(2.0, 4.0, weight=0.5)
    (2.0, 3.0)
    """
    return x if prev is None else prev + weight * (x - prev)


# -- typed messages to the driver thread ---------------------------------------------------
@dataclass(slots=True)
class Push:
    """A job whose record committed (``ready_at``: wait in the timer heap until then)."""
    job: Any
    ready_at: float | None = None


@dataclass(slots=True)
class Resume:
    """A job of an earlier run to take over (``resume()``, or its key submitted again)."""
    job: Any


@dataclass(slots=True)
class Rejected:
    """The store refused a job's record (its key exists): it never runs."""
    job: Any
    error: BaseException


@dataclass(slots=True)
class Completed:
    """Attempts whose Dask futures finished: ``(job, token)`` pairs."""
    items: list


@dataclass(slots=True)
class Results:
    """A fetch came back: the ``(job, token, future)`` batch and its concurrent future."""
    batch: list
    fetched: Any


@dataclass(slots=True)
class Call:
    """Run ``fn(now)`` in the driver thread (cancel, requeue) and report back in ``box``."""
    fn: Any
    box: list = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class Stop:
    """Close: cancel in-flight futures (their records stay running, for resume())."""


# -- timers ----------------------------------------------------------------------------------
READY, TIMEOUT, DEADLINE, BREAKER = "ready", "timeout", "deadline", "breaker"
#: The timer kinds of :class:`.machine.StateMachine` (the fetch wait is the driver's own).
TIMERS = (READY, TIMEOUT, DEADLINE, BREAKER)


# -- events the pure core (:class:`.machine.StateMachine`) takes ----------------------------------
@dataclass(slots=True)
class Ended:
    """An attempt's Dask future finished: ``ok`` (its result is to be fetched) or not
    (``error``, ``traceback``)."""
    job: Any
    token: int
    ok: bool
    error: BaseException | None = None
    traceback: str = ""


@dataclass(slots=True)
class Fetched:
    """Results came back: ``(job, token, future)`` items and ``(ok, value, tb)`` outcomes."""
    batch: list
    outcomes: list


@dataclass(slots=True)
class Sent:
    """Jobs of a :class:`HandOver` went to Dask: their ``futures``, or one error per job."""
    jobs: list
    futures: list | None = None
    errors: list | None = None


@dataclass(slots=True)
class Unsent:
    """Jobs of a :class:`HandOver` were not handed over (the lease could not be read)."""
    jobs: list


@dataclass(slots=True)
class Cancel:
    """Cancel a job (answered by a :class:`Reply`: ``False`` when it was already final)."""
    job: Any


@dataclass(slots=True)
class Requeue:
    """Give a dead, failed or cancelled job a fresh set of attempts (a :class:`Reply`)."""
    job: Any


@dataclass(slots=True)
class Threads:
    """The cluster now has ``n`` worker threads (``max_in_flight`` follows them)."""
    n: int


@dataclass(slots=True)
class Tick:
    """Fire the timers that are due."""


@dataclass(slots=True)
class Admit:
    """Fill the free slots from the policy."""


@dataclass(slots=True)
class Ask:
    """A core event sent from another thread, answered in ``box`` (``Engine.ask``)."""
    event: Any
    box: list = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


# -- decisions the core returns, carried out by the driver thread --------------------------
@dataclass(slots=True)
class HandOver:
    """Hand these jobs to Dask (after reading the lease); answer with Sent or Unsent."""
    jobs: list


@dataclass(slots=True)
class CancelFutures:
    """Cancel these Dask futures."""
    futures: list


@dataclass(slots=True)
class Record:
    """Record a job event (already in ``job.events``) in the store (``stored``) and
    emit it to subscribers, with the queue's depth when it happened."""
    job: Any
    t: float
    kind: str
    detail: str
    depth: int
    stored: bool = True


@dataclass(slots=True)
class Update:
    """Write the job's record; ``fields`` are extra columns, ``result`` stores its result."""
    job: Any
    fields: dict | None = None
    result: bool = False


@dataclass(slots=True)
class Watch:
    """Report when these ``(job, token, future)`` attempts finish (as :class:`Ended`)."""
    items: list


@dataclass(slots=True)
class Fetch:
    """Fetch the results of these finished ``(job, token, future)`` attempts."""
    items: list


@dataclass(slots=True)
class Reply:
    """The answer to an :class:`Ask` (a value, or the exception to raise)."""
    value: Any


@dataclass(slots=True)
class LeaseLost:
    """A worker refused an attempt: another driver holds the store. Stop."""
