"""The engine's scheduling as a pure state machine: :class:`StateMachine` takes an event (a
typed message of :mod:`.core`) and the time, and returns decisions (typed too).

It holds the running set, the timers (retry backoff, timeouts, deadlines, breaker
probes), the policy, the circuit breakers and the retry budget, and decides what to
admit, what a finished attempt becomes and what to cancel. It never touches Dask,
SQLite, threads or the wall clock: the driver thread (:mod:`.engine`) feeds it and
carries out its decisions, and the unit tests drive it directly.

Examples
--------
>>> from packlab.queue import Retry, CircuitBreaker, RetryBudget
>>> from packlab.queue.job import Job
>>> from packlab.queue.policies import get_policy
>>> c = StateMachine(get_policy("fifo"), Retry(attempts=1), RetryBudget(), CircuitBreaker(), max_in_flight=2)
>>> for i in range(3):
...     _ = c.handle(core.Push(Job(f"j{i}", i, "m.f", b"")), now=0.0)
>>> [[j.id for j in d.jobs] for d in c.handle(core.Admit(), now=0.0)]
[['j0', 'j1']]
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

from ..errors import LeaseError, PacklabError
from . import core
from .breakers import Breakers
from .core import BREAKER, DEADLINE, READY, TIMEOUT
from .job import Job, JobTimeout, check_requeueable
from .policies import Policy
from .retry import CircuitBreaker, Retry, RetryBudget
from .states import CANCELLED, DONE, FAILED, QUEUED, RETRYING, RUNNING, Kind

RETRY_WAIT = 1.0  # s: a retry deferred by a spent budget asks again after this


class StateMachine:
    """The queue's scheduling state and its decisions (see the module docstring).

    Parameters
    ----------
    policy, retry, budget, breaker
        Which job runs next; the default retry; the retry budget; the circuit breaker
        template (one per function).
    max_in_flight : int, optional
        Fixed capacity; else :func:`.core.capacity` of the cluster's threads
        (:class:`~.core.Threads` events) times ``factor``.
    fenced : bool
        A lease fences the store: a :class:`~packlab.errors.LeaseError` from a worker
        means another driver took it (decision :class:`~.core.LeaseLost`).
    """

    def __init__(self, policy: Policy, retry: Retry, budget: RetryBudget, breaker: CircuitBreaker,
                 max_in_flight: int | None = None, factor: int = 8, fenced: bool = False) -> None:
        self.policy, self.retry, self.budget = policy, retry, budget
        self.breakers = Breakers(breaker)
        self.fixed_cap, self.factor, self.fenced = max_in_flight, factor, fenced
        self.running: dict[str, Job] = {}
        self.timers: list = []  # (at, seq, kind, what, token)
        self._tn = itertools.count()
        self.threads = 0
        self.runtime: float | None = None  # mean attempt run time (as workers timed it)
        self.samples = 0
        self._out: list = []
        self._on = {core.Push: self._push, core.Resume: self._resume, core.Rejected: self._rejected,
                    core.Ended: self._ended, core.Fetched: self._fetched, core.Sent: self._sent,
                    core.Unsent: self._unsent, core.Cancel: self._cancel, core.Requeue: self._requeue,
                    core.Threads: self._threads, core.Tick: self._tick, core.Admit: self._admit,
                    core.Stop: self._stop}
        self._fire = {READY: self._ready, TIMEOUT: self._timeout, DEADLINE: self._deadline,
                      BREAKER: self._probe}

    # -- the API -------------------------------------------------------------------------
    def handle(self, event: Any, now: float) -> list:
        """Apply ``event`` at time ``now``; return the decisions to carry out, in order."""
        self._on[type(event)](event, now)
        return self.take()

    def handle_all(self, events: list, now: float) -> list:
        """Apply several events at ``now`` (e.g. attempts that finished together)."""
        for ev in events:
            self._on[type(ev)](ev, now)
        return self.take()

    def take(self) -> list:
        """The decisions made so far (after a handler raised, those it made before)."""
        out, self._out = self._out, []
        return out

    def capacity(self) -> int:
        """``max_in_flight`` now."""
        if self.fixed_cap:
            return self.fixed_cap
        return core.capacity(self.threads, self.factor, self.runtime, self.samples)

    @property
    def short(self) -> bool:
        """Whether recent jobs are tiny (:func:`.core.short_jobs`)."""
        return core.short_jobs(self.runtime, self.samples)

    def next_due(self) -> float | None:
        """When the next timer fires (``None``: no timer)."""
        return self.timers[0][0] if self.timers else None

    def snapshot(self, now: float) -> dict[str, Any]:
        return {"policy": self.policy.name, "queued": len(self.policy), "in_flight": len(self.running),
                "max_in_flight": self.capacity(), "held": self.breakers.held_counts(),
                "breakers": self.breakers.stats(), "retry_budget": self.budget.stats(now)}

    # -- helpers -------------------------------------------------------------------------
    def _event(self, job: Job, kind: str, detail: str, now: float) -> None:
        job.events.append((now, kind, detail))
        self._out.append(core.Record(job, now, kind, detail, len(self.policy)))

    def _update(self, job: Job, **fields: Any) -> None:
        self._out.append(core.Update(job, fields or None))

    def _timer(self, at: float, kind: str, what: Any, tok: int) -> None:
        heapq.heappush(self.timers, (at, next(self._tn), kind, what, tok))

    def _late(self, job: Job, why: str, now: float) -> None:
        if not job.late:
            job.late = True
            self._event(job, Kind.DEADLINE_MISSED, why, now)
            self._update(job)

    def _end_attempt(self, job: Job, now: float, runtime: float | None = None) -> float:
        """Free the attempt's slot and charge its owner: ``runtime`` as its worker timed
        it, else (a failure, a timeout, a cancel) the time since it was handed to Dask."""
        self.running.pop(job.id, None)
        job._future = None
        since = max(0.0, now - job._started)
        runtime = since if runtime is None else min(max(0.0, runtime), since)
        self.policy.finished(job, runtime, now)
        return runtime

    # -- jobs arriving -------------------------------------------------------------------
    def _push(self, ev: core.Push, now: float) -> None:
        job = ev.job
        if job.status in (QUEUED, RETRYING):
            if ev.ready_at is None:
                self.policy.push(job)
            else:  # a resumed retry: in the timer heap until the end of its backoff
                job._token += 1
                self._timer(ev.ready_at, READY, job, job._token)
            self.budget.submitted(now)
            if job.deadline is not None:
                self._timer(job.deadline, DEADLINE, job, 0)

    def _resume(self, ev: core.Resume, now: float) -> None:
        job = ev.job
        if job.done():
            return
        was = job.status
        job.status = RETRYING if was == RETRYING else QUEUED
        why = "was running when the last driver stopped" if was == RUNNING else f"was {was}"
        ready_at = job.next_attempt if job.status == RETRYING and (job.next_attempt or 0) > now else None
        if ready_at is not None:  # the rest of its backoff: a restart is no reason to hurry
            why += f"; next attempt in {ready_at - now:.3f} s, at the end of its backoff"
        self._event(job, Kind.RESUMED, why, now)
        self._update(job)
        self._push(core.Push(job, ready_at), now)

    def _rejected(self, ev: core.Rejected, now: float) -> None:
        job = ev.job
        if job.status != QUEUED:
            return
        err = (f"job {job.id} was not recorded, so it never runs: {ev.error}. Another process "
               f"submitted key={job.key!r} first; submit the key again to get that job.")
        job.status, job.error, job._exc = FAILED, err, PacklabError(err)
        job.events.append((now, Kind.REJECTED, err))
        self._out.append(core.Record(job, now, Kind.REJECTED, err, len(self.policy), stored=False))

    # -- admission -----------------------------------------------------------------------
    def _threads(self, ev: core.Threads, now: float) -> None:
        self.threads = ev.n

    def _admit(self, ev: core.Admit, now: float) -> None:
        room = core.refill(self.capacity(), len(self.running))
        batch: list[Job] = []
        while len(batch) < room:
            job = self.policy.pop(now)
            if job is None:
                break
            if not self.breakers.allow(job, now):
                self.policy.finished(job, 0.0, now)
                self._event(job, Kind.HELD, f"circuit {self.breakers.state(job.fn_name)} for {job.fn_name}",
                            now)
                continue
            batch.append(job)
        if batch:
            self._out.append(core.HandOver(batch))

    def _unsent(self, ev: core.Unsent, now: float) -> None:
        for job in ev.jobs:
            self.policy.finished(job, 0.0, now)
            self.policy.push(job)

    def _sent(self, ev: core.Sent, now: float) -> None:
        for job in ev.jobs:
            job.attempts += 1
            job._token += 1
            job.status, job._started, job.next_attempt = RUNNING, now, None
            self.running[job.id] = job
            self._event(job, Kind.RUNNING, f"attempt {job.attempts}", now)
            self._update(job)
        if ev.futures is None:  # recorded running all the same: the attempt counts, and fails
            for job, err in zip(ev.jobs, ev.errors, strict=True):
                self._fail(job, err, "", now)
            return
        for job, fut in zip(ev.jobs, ev.futures, strict=True):
            job._future = fut
            if job.timeout:
                self._timer(now + job.timeout, TIMEOUT, job, job._token)
            if job.deadline is not None and now > job.deadline:
                self._late(job, "started after its deadline", now)
        self._out.append(core.Watch([(j, j._token, j._future) for j in ev.jobs]))

    # -- outcomes ------------------------------------------------------------------------
    @staticmethod
    def _current(job: Job, tok: int) -> bool:
        return tok == job._token and job.status == RUNNING

    def _ended(self, ev: core.Ended, now: float) -> None:
        job = ev.job
        if not self._current(job, ev.token) or job._future is None:
            return  # an attempt that timed out or was cancelled: its end is ignored
        if not ev.ok:
            self._fail(job, ev.error, ev.traceback, now)
            return
        # Its slot is free, and the attempt is over: bumping the token keeps its timeout
        # from firing while the result is on its way.
        self.running.pop(job.id, None)
        job._token += 1
        out = self._out
        if out and type(out[-1]) is core.Fetch:  # finished together: fetched together
            out[-1].items.append((job, job._token, job._future))
        else:
            out.append(core.Fetch([(job, job._token, job._future)]))

    def _fetched(self, ev: core.Fetched, now: float) -> None:
        for (job, tok, _), (ok, value, tb) in zip(ev.batch, ev.outcomes, strict=True):
            if not self._current(job, tok):
                continue  # cancelled (or cancelled and requeued) meanwhile
            if ok:
                result, runtime = value  # payload.run timed the call on its worker
                self._succeed(job, result, runtime, now)
            else:
                self._fail(job, value, tb, now)

    def _succeed(self, job: Job, result: Any, runtime: float | None, now: float) -> None:
        if runtime is not None:
            self.runtime, self.samples = core.mean(self.runtime, runtime), self.samples + 1
        runtime = self._end_attempt(job, now, runtime)
        for held in self.breakers.success(job.fn_name, now):
            self._event(held, Kind.RELEASED, f"circuit closed for {job.fn_name}", now)
            self.policy.push(held)
        job._result, job._has_result, job.status = result, True, DONE
        job._payload = None  # a done job never runs again (its payload stays in the store)
        if job.deadline is not None and now > job.deadline:
            self._late(job, "finished after its deadline", now)
        self._event(job, Kind.DONE, f"attempt {job.attempts} in {runtime:.3f} s", now)
        self._out.append(core.Update(job, None, result=True))

    def _fail(self, job: Job, exc: BaseException, tb: str, now: float) -> None:
        if isinstance(exc, LeaseError) and self.fenced:
            self._out.append(core.LeaseLost())  # a worker refused it: another driver holds the store
            return
        self._end_attempt(job, now)
        probe_at = self.breakers.failure(job.fn_name, now)
        if probe_at is not None:
            self._timer(probe_at, BREAKER, job.fn_name, 0)
        job.error, job.traceback, job._exc = f"{type(exc).__name__}: {exc}", tb, exc
        out = core.after_failure(job.retry or self.retry, exc, job.attempts, now, job.deadline, job.error)
        job.status, job.next_attempt = out.status, out.next_attempt
        for kind, detail in out.events:
            self._event(job, kind, detail, now)
        if out.status == RETRYING:
            job._token += 1
            self._timer(out.next_attempt, READY, job, job._token)
        if out.late:
            self._late(job, "its retry starts after its deadline", now)
        self._update(job, error=job.error, traceback=tb, next_attempt=job.next_attempt)

    # -- timers --------------------------------------------------------------------------
    def _tick(self, ev: core.Tick, now: float) -> None:
        while self.timers and self.timers[0][0] <= now:
            _, _, kind, what, tok = heapq.heappop(self.timers)
            self._fire[kind](what, tok, now)

    def _ready(self, job: Job, tok: int, now: float) -> None:
        if tok == job._token and job.status == RETRYING:
            if self.budget.acquire(now):
                self.policy.push(job)
            else:  # the budget is spent: wait, do not fail
                if not job.events or job.events[-1][1] != Kind.RETRY_DEFERRED:
                    self._event(job, Kind.RETRY_DEFERRED, "retry budget spent; waiting", now)
                self._timer(now + RETRY_WAIT, READY, job, tok)

    def _timeout(self, job: Job, tok: int, now: float) -> None:
        # Dask cannot stop a running thread: the future is cancelled and released, the
        # function runs on until it returns, and its result is ignored (token bumped).
        if not self._current(job, tok):
            return
        if job._future is not None:
            self._out.append(core.CancelFutures([job._future]))
        job._token += 1
        self._fail(job, JobTimeout(f"job {job.id} ran past its timeout of {job.timeout} s"), "", now)

    def _deadline(self, job: Job, tok: int, now: float) -> None:
        if not job.done():
            self._late(job, "deadline passed before the job finished", now)

    def _probe(self, fn_name: str, tok: int, now: float) -> None:
        job = self.breakers.probe(fn_name, now)
        if job is not None:
            self._event(job, Kind.PROBE, f"single probe for {fn_name} after cooldown", now)
            self._out.append(core.HandOver([job]))

    # -- requests: cancel, requeue, stop -------------------------------------------------
    def _cancel(self, ev: core.Cancel, now: float) -> None:
        job = ev.job
        if job.done():
            self._out.append(core.Reply(False))
            return
        if job.status == RUNNING:
            fut = job._future
            self._end_attempt(job, now)
            if fut is not None:
                self._out.append(core.CancelFutures([fut]))
            self.breakers.abandon(job.fn_name, now)
        else:
            self.policy.remove(job)
            self.breakers.forget(job)
        job._token += 1
        job.status = CANCELLED
        self._event(job, Kind.CANCELLED, "by request", now)
        self._update(job)
        self._out.append(core.Reply(True))

    def _requeue(self, ev: core.Requeue, now: float) -> None:
        job = ev.job
        try:
            check_requeueable(job.id, job.status)  # here, in order: two callers cannot both pass
        except PacklabError as e:
            self._out.append(core.Reply(e))
            return
        job._token += 1
        was, n = job.status, job.attempts
        job.status, job.attempts, job._exc = QUEUED, 0, None
        self._event(job, Kind.REQUEUED, f"was {was} after {n} attempts", now)
        self._update(job)
        self.policy.push(job)
        self._out.append(core.Reply(job))

    def _stop(self, ev: core.Stop, now: float) -> None:
        # Records of in-flight jobs stay "running": resume() runs them again.
        futs = [j._future for j in self.running.values() if j._future is not None]
        if futs:
            self._out.append(core.CancelFutures(futs))


__all__ = ["StateMachine"]
