"""What becomes of an attempt (the engine's outcomes) and the engine's timers: a part of
:class:`~.engine.Engine`, apart only to keep each module short. Everything here runs in
the driver thread; the decisions themselves are the pure :mod:`.core`'s.
"""

from __future__ import annotations

import heapq
import traceback
from typing import Any

import cloudpickle
from distributed.client import FutureCancelledError

from ..errors import LeaseError
from . import core
from .core import BREAKER, FETCH, READY
from .job import Job, JobTimeout
from .states import DONE, RETRYING, RUNNING, Kind


class Outcomes:
    """Outcomes and timers of :class:`~.engine.Engine` (a mixin: it uses the engine's
    state: ``running``, ``policy``, ``store``, ``breakers``, ``fetcher``, ``_timers``)."""

    # -- outcomes ------------------------------------------------------------------------
    def _completed(self, job: Job, tok: int, now: float) -> None:
        """An attempt's future finished: fail it, or queue its result to be fetched."""
        if tok != job._token or job.status != RUNNING or job._future is None:
            return  # an attempt that timed out or was cancelled: its end is ignored
        fut = job._future
        if fut.status == "finished":
            # Its slot is free, and the attempt is over: bumping the token keeps its
            # timeout from firing while the result is on its way.
            self.running.pop(job.id, None)
            job._token += 1
            when = self.fetcher.add([(job, job._token, fut)], now)
            if when is not None:
                self._timer(when, FETCH, None, 0)
        elif fut.status == "error":
            exc = fut.exception()
            tb = "".join(traceback.format_exception(type(exc), exc, fut.traceback()))
            self._failed(job, exc, tb, now)
        else:
            self._failed(job, FutureCancelledError(fut.key, reason="lost by the scheduler"), "", now)

    def end_attempt(self, job: Job, now: float, runtime: float | None = None) -> float:
        """Free the attempt's slot and charge its owner: ``runtime`` as its worker timed
        it, else (a failure, a timeout, a cancel) the time since it was handed to Dask."""
        self.running.pop(job.id, None)
        job._future = None
        since = max(0.0, now - job._started)
        runtime = since if runtime is None else min(max(0.0, runtime), since)
        self.policy.finished(job, runtime, now)
        return runtime

    def _succeeded(self, job: Job, result: Any, now: float, runtime: float | None = None) -> None:
        if runtime is not None:
            self._runtime, self._samples = core.mean(self._runtime, runtime), self._samples + 1
        runtime = self.end_attempt(job, now, runtime)
        for held in self.breakers.success(job.fn_name, now):
            self.event(held, Kind.RELEASED, f"circuit closed for {job.fn_name}", now)
            self.policy.push(held)
        job._result, job._has_result, job.status = result, True, DONE
        job._payload = None  # a done job never runs again (its payload stays in the store)
        blob = None
        try:
            blob = cloudpickle.dumps(result)
            if len(blob) > self.result_max:
                blob = None
        except Exception:
            pass
        if job.deadline is not None and now > job.deadline:
            self._late(job, "finished after its deadline", now)
        self.event(job, Kind.DONE, f"attempt {job.attempts} in {runtime:.3f} s", now)
        self.store.update(job, result=blob, has_result=int(blob is not None))

    def _failed(self, job: Job, exc: BaseException, tb: str, now: float) -> None:
        if isinstance(exc, LeaseError) and self.lease is not None:
            self.lease.mark_lost()  # a worker refused it: another driver holds the store
            return
        self.end_attempt(job, now)
        probe_at = self.breakers.failure(job.fn_name, now)
        if probe_at is not None:
            self._timer(probe_at, BREAKER, job.fn_name, 0)
        job.error, job.traceback, job._exc = f"{type(exc).__name__}: {exc}", tb, exc
        out = core.after_failure(job.retry or self.retry, exc, job.attempts, now, job.deadline, job.error)
        job.status, job.next_attempt = out.status, out.next_attempt
        for kind, detail in out.events:
            self.event(job, kind, detail, now)
        if out.status == RETRYING:
            job._token += 1
            self._timer(out.next_attempt, READY, job, job._token)
        if out.late:
            self._late(job, "its retry starts after its deadline", now)
        self.store.update(job, error=job.error, traceback=tb, next_attempt=job.next_attempt)

    def _late(self, job: Job, why: str, now: float) -> None:
        if not job.late:
            job.late = True
            self.event(job, Kind.DEADLINE_MISSED, why, now)
            self.store.update(job)

    # -- timers --------------------------------------------------------------------------
    def _timer(self, t: float, kind: str, what: Any, tok: int) -> None:
        heapq.heappush(self._timers, (t, next(self._tn), kind, what, tok))

    def _fire_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, what, tok = heapq.heappop(self._timers)
            self._guard(kind, self._fire[kind], what, tok, now)

    def _ready(self, job: Job, tok: int, now: float) -> None:
        if tok == job._token and job.status == RETRYING:
            with self.budget_lock:
                ok = self.budget.acquire(now)
            if ok:
                self.policy.push(job)
            else:  # the budget is spent: wait, do not fail
                if not job.events or job.events[-1][1] != Kind.RETRY_DEFERRED:
                    self.event(job, Kind.RETRY_DEFERRED, "retry budget spent; waiting", now)
                self._timer(now + 1.0, READY, job, tok)

    def _timeout(self, job: Job, tok: int, now: float) -> None:
        # Dask cannot stop a running thread: the future is cancelled and released, the
        # function runs on until it returns, and its result is ignored (token bumped).
        if tok != job._token or job.status != RUNNING:
            return
        fut = job._future
        job._token += 1
        try:
            self.client.cancel([fut])
        except Exception:
            pass
        self._failed(job, JobTimeout(f"job {job.id} ran past its timeout of {job.timeout} s"), "", now)

    def _deadline(self, job: Job, tok: int, now: float) -> None:
        if not job.done():
            self._late(job, "deadline passed before the job finished", now)

    def _probe(self, fn_name: str, tok: int, now: float) -> None:
        job = self.breakers.probe(fn_name, now)
        if job is not None:
            self.event(job, Kind.PROBE, f"single probe for {fn_name} after cooldown", now)
            self._dispatch([job], now)

    def _fetch(self, what: Any, tok: int, now: float) -> None:
        self.fetcher.kick(now, self.capacity(now) // 2)
