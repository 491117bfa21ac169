"""The admission loop: one background thread that owns the queue's running state.

It keeps at most ``max_in_flight`` futures on Dask, pops the next job from the policy,
handles completions (Dask's callbacks only post a message here), timeouts, deadlines,
backoff timers and circuit breakers (:mod:`.breakers`); results are fetched off this
thread (:mod:`.fetch`). Nothing ever sleeps on a worker: a retry waits in the timer heap
(and its end is stored, so a resumed retry waits out the rest of its backoff).

Handing jobs to Dask is the one synchronous store write: the transaction that records
them running checks the driver lease and stays open around ``client.map``, so a queue
that lost its lease hands nothing more to Dask (:meth:`.Store.dispatching`).

Threads: the thread that creates a job (``submit``) or loads it (``resume``, ``get``)
fills it in before handing it over; from the ``push`` or ``resume`` message on, only
this thread changes it, so there are no locks around job state. Users block on the
queue's :class:`~.job.Signal`. One failing message is logged and recorded in
``Signal.error`` (raised by ``submit``/``wait``, shown by ``stats``); the others of its
batch are still handled.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import re
import sqlite3
import threading
import time
import traceback
from typing import Any

import cloudpickle
from distributed.client import FutureCancelledError

from ..errors import PacklabError
from .breakers import Breakers
from .fetch import Fetcher, watch
from .job import CANCELLED, DEAD, DONE, FAILED, QUEUED, RETRYING, RUNNING, Job, JobTimeout, Signal
from .payload import Payload
from .payload import run as _run_payload
from .policies import Policy
from .retry import CircuitBreaker, Retry, RetryBudget
from .store import Store

log = logging.getLogger("packlab.queue")


def _short(fn_name: str) -> str:
    """The dashboard's task name: the function's own name, Dask-key safe."""
    return re.sub(r"[^A-Za-z0-9_]", "_", fn_name.rsplit(".", 1)[-1]) or "job"


class Admission:
    """The queue's engine (see the module docstring); :class:`JobQueue` is its face."""

    def __init__(self, client, policy: Policy, store: Store, retry: Retry, budget: RetryBudget,
                 breaker: CircuitBreaker, max_in_flight: int | None, factor: int, result_max: int):
        self.client, self.policy, self.store, self.retry = client, policy, store, retry
        self.budget = budget
        self.fixed_cap, self.factor, self.result_max = max_in_flight, factor, result_max
        self.signal = Signal()
        self.budget_lock = threading.Lock()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.jobs: dict[str, Job] = {}
        self.running: dict[str, Job] = {}
        self.breakers = Breakers(breaker)
        self._timers: list = []
        self._tn = itertools.count()
        self._dispatched = 0
        self._cap = (0.0, factor)
        self.fetcher = Fetcher(client, lambda batch, f: self.inbox.put(("results", batch, f)))
        self.thread = threading.Thread(target=self._loop, name="packlab-queue", daemon=True)
        self.thread.start()

    # -- the loop ------------------------------------------------------------------------
    def _loop(self) -> None:
        stop = False
        while not stop:
            wait = 0.2
            if self._timers:
                wait = min(wait, max(0.0, self._timers[0][0] - time.time()))
            msgs = []
            try:
                msgs.append(self.inbox.get(timeout=wait))
                while len(msgs) < 10000:
                    msgs.append(self.inbox.get_nowait())
            except queue.Empty:
                pass
            stop = self._handle(msgs)
            if not stop:
                self._guard("timers", self._fire_timers, time.time())
                self._guard("admission", self._admit, time.time())  # refill freed slots first
                self._guard("fetch", self.fetcher.kick, time.time(), self.capacity() // 2)
            self.signal.notify()

    def _guard(self, what: str, fn, *args) -> Any:
        """Run one step; a bug in it is logged and surfaced, and the loop serves on."""
        try:
            return fn(*args)
        except Exception as e:
            if self.signal.error is None:
                self.signal.error = f"{what}: {type(e).__name__}: {e}"
            log.exception("packlab queue loop error (%s)", what)
            return None

    def _handle(self, msgs: list) -> bool:
        now = time.time()
        finished = []
        for msg in msgs:
            kind = msg[0]
            if kind == "done":
                finished.append(msg[1:])
            elif kind == "stop":
                self._stop()
                return True
            else:
                self._guard(kind, getattr(self, f"_on_{kind}"), *msg[1:], now)
        for job, tok in finished:
            self._guard("done", self._completed, job, tok, now)
        return False

    def _on_push(self, job: Job, now: float, ready_at: float | None = None) -> None:
        """Queue a job; with ``ready_at``, in the timer heap until then (a resumed retry)."""
        if job.status in (QUEUED, RETRYING):
            if ready_at is None:
                self.policy.push(job)
            else:
                job._token += 1
                self._timer(ready_at, "ready", job, job._token)
            with self.budget_lock:
                self.budget.submitted(now)
            if job.deadline is not None:
                self._timer(job.deadline, "deadline", job, 0)

    def _on_resume(self, job: Job, now: float) -> None:
        """Take over a job loaded from the store (resume(), or its key submitted again)."""
        was = job.status
        job._cv = self.signal
        if job.done:
            return
        job.status = RETRYING if was == RETRYING else QUEUED
        why = "was running when the last driver stopped" if was == RUNNING else f"was {was}"
        ready_at = job.next_attempt if job.status == RETRYING and (job.next_attempt or 0) > now else None
        if ready_at is not None:  # the rest of its backoff: a restart is no reason to hurry
            why += f"; next attempt in {ready_at - now:.3f} s, at the end of its backoff"
        self.event(job, "resumed", why, now)
        self.store.update(job)
        self._on_push(job, now, ready_at)

    def _on_rejected(self, job: Job, error: BaseException, now: float) -> None:
        """The store refused the job's record (its key exists): it never runs."""
        if job.status != QUEUED:
            return
        msg = (f"job {job.id} was not recorded, so it never runs: {error}. Another process "
               f"submitted key={job.key!r} first; submit the key again to get that job.")
        job.status, job.error, job._exc = FAILED, msg, PacklabError(msg)
        job.events.append((now, "rejected", msg))

    def _on_call(self, fn, box: list, ev: threading.Event, now: float) -> None:
        # Run fn in the loop thread (cancel, requeue) and report back.
        try:
            box.append(fn(now))
        except BaseException as e:
            box.append(e)
        ev.set()

    def _on_results(self, batch: list, fetched, now: float) -> None:
        self.fetcher.finished()
        try:
            outcomes = fetched.result()
        except Exception as e:  # the fetch itself broke: every attempt of the batch failed
            outcomes = [(False, e, traceback.format_exc())] * len(batch)
        for (job, tok, _), (ok, value, tb) in zip(batch, outcomes, strict=True):
            if tok != job._token or job.status != RUNNING:
                continue  # cancelled (or cancelled and requeued) meanwhile
            if ok:
                result, runtime = value  # payload.run timed the call on its worker
                self._guard("result", self._succeeded, job, result, now, runtime)
            else:
                self._guard("result", self._failed, job, value, tb, now)

    def _stop(self) -> None:
        # Records of in-flight jobs stay "running": resume() runs them again.
        self.signal.closed = True
        self.fetcher.shutdown()
        futs = [j._future for j in self.running.values() if j._future is not None]
        if futs:
            try:
                self.client.cancel(futs)
            except Exception:
                pass

    def call(self, fn, timeout: float = 60.0) -> Any:
        """Run ``fn(now)`` in the loop thread and return its result (or raise its error)."""
        box: list = []
        ev = threading.Event()
        self.inbox.put(("call", fn, box, ev))
        if not ev.wait(timeout):
            raise TimeoutError("the queue's loop did not answer")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    # -- admission -----------------------------------------------------------------------
    def capacity(self, now: float | None = None) -> int:
        """``max_in_flight``: fixed, or the cluster's threads times the factor, refreshed
        every second so it follows the cluster as it scales (at least ``factor``, so an
        adaptive cluster at zero workers still sees demand)."""
        if self.fixed_cap:
            return self.fixed_cap
        now = time.time() if now is None else now
        t, cap = self._cap
        if now - t > 1.0:
            try:
                threads = sum(self.client.nthreads().values())
            except Exception:
                threads = 0
            cap = max(1, threads) * self.factor
            self._cap = (now, cap)
        return cap

    def _admit(self, now: float) -> None:
        cap = self.capacity(now)
        room = cap - len(self.running)
        if self.running and room < cap // 2:
            # Refill in batches, one client.map per half of the slots: each call costs
            # the scheduler a graph update, and half the slots still keep workers busy.
            return
        batch: list[Job] = []
        while len(batch) < room:
            job = self.policy.pop(now)
            if job is None:
                break
            if not self.breakers.allow(job, now):
                self.policy.finished(job, 0.0, now)
                self.event(job, "held", f"circuit {self.breakers.state(job.fn_name)} for {job.fn_name}", now)
                continue
            batch.append(job)
        if batch:
            self._dispatch(batch, now)

    def _dispatch(self, jobs: list[Job], now: float) -> None:
        # One client.map per run of jobs with the same resources: per-call overhead in
        # the client, not the scheduler, is what limits throughput of tiny jobs.
        i = 0
        while i < len(jobs):
            j = i + 1
            while j < len(jobs) and jobs[j].resources == jobs[i].resources:
                j += 1
            self._dispatch_run(jobs[i:j], now)
            i = j

    def _dispatch_run(self, jobs: list[Job], now: float) -> None:
        self._dispatched += 1
        # The attempt number (stored) keeps keys apart across drivers: a resumed attempt
        # must not pick up an earlier driver's future of the same key on a shared cluster.
        keys = [f"{_short(j.fn_name)}-packlab-{j.id}-{j.attempts + 1}.{j._token + 1}" for j in jobs]

        def hand_over():
            try:
                # Dask's priority follows packlab's order: an earlier batch runs first,
                # and Dask keeps submission order within a batch.
                return self.client.map(_run_payload, [Payload(j._payload) for j in jobs], key=keys,
                                       priority=-self._dispatched, pure=False,
                                       resources=jobs[0].resources, retries=0)
            except Exception as e:  # recorded running all the same: the attempt counts, and fails
                return e

        try:
            futs = self.store.dispatching([(j.id, j.attempts + 1) for j in jobs], now, hand_over)
        except (PacklabError, sqlite3.Error) as e:
            self._not_dispatched(jobs, e, now)
            return
        for job in jobs:
            job.attempts += 1
            job._token += 1
            job.status, job._started, job.next_attempt = RUNNING, now, None
            self.running[job.id] = job
        if isinstance(futs, Exception):
            for job in jobs:
                self.event(job, "running", f"attempt {job.attempts}", now)
                self._failed(job, FutureCancelledError(f"packlab-{job.id}", reason=str(futs)), "", now)
            return
        for job, fut in zip(jobs, futs, strict=True):
            job._future = fut
            if job.timeout:
                self._timer(now + job.timeout, "timeout", job, job._token)
            if job.deadline is not None and now > job.deadline:
                self._late(job, "started after its deadline", now)
            self.event(job, "running", f"attempt {job.attempts}", now)
        watch(self.client, [(j, j._token, j._future) for j in jobs],
              lambda job, tok: self.inbox.put(("done", job, tok)))

    def _not_dispatched(self, jobs: list[Job], error: BaseException, now: float) -> None:
        """The store could not record the jobs running, so nothing went to Dask: back to
        the policy they go. A lost lease has stopped the queue by its next turn; a store
        error (e.g. locked by another writer past the busy timeout) is tried again."""
        if isinstance(error, sqlite3.Error):
            log.warning("packlab queue: store %s could not record %d jobs running (%s); they wait",
                        self.store.path, len(jobs), error)
        for job in jobs:
            self.policy.finished(job, 0.0, now)
            self.policy.push(job)

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
                self._timer(when, "fetch", None, 0)
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
        runtime = self.end_attempt(job, now, runtime)
        for held in self.breakers.success(job.fn_name, now):
            self.event(held, "released", f"circuit closed for {job.fn_name}", now)
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
        self.event(job, "done", f"attempt {job.attempts} in {runtime:.3f} s", now)
        self.store.update(job, result=blob, has_result=int(blob is not None))

    def _failed(self, job: Job, exc: BaseException, tb: str, now: float) -> None:
        self.end_attempt(job, now)
        probe_at = self.breakers.failure(job.fn_name, now)
        if probe_at is not None:
            self._timer(probe_at, "breaker", job.fn_name, 0)
        retry = job.retry or self.retry
        verdict = retry.classify(exc)
        job.error, job.traceback, job._exc = f"{type(exc).__name__}: {exc}", tb, exc
        job.next_attempt = None
        self.event(job, "failed", f"attempt {job.attempts}: {job.error}", now)
        if verdict == "retry" and job.attempts < retry.attempts:
            delay = retry.delay(job.attempts)
            job.status, job.next_attempt = RETRYING, now + delay
            job._token += 1
            self._timer(job.next_attempt, "ready", job, job._token)
            self.event(job, "retrying", f"in {delay:.3f} s: attempt {job.attempts + 1} of {retry.attempts}",
                       now)
            if job.deadline is not None and now + delay > job.deadline:
                self._late(job, "its retry starts after its deadline", now)
        elif verdict == "fail":
            job.status = FAILED
            self.event(job, "failed-final", f"{type(exc).__name__} is not retried (not in Retry.on)", now)
        else:
            job.status = DEAD
            why = "a permanent error (Retry.give_up_on)" if verdict == "dead" else \
                f"{job.attempts} attempts exhausted"
            self.event(job, "dead", f"dead-letter queue: {why}", now)
        self.store.update(job, error=job.error, traceback=tb, next_attempt=job.next_attempt)

    def _late(self, job: Job, why: str, now: float) -> None:
        if not job.late:
            job.late = True
            self.event(job, "deadline-missed", why, now)
            self.store.update(job)

    # -- timers --------------------------------------------------------------------------
    def _timer(self, t: float, kind: str, what: Any, tok: int) -> None:
        heapq.heappush(self._timers, (t, next(self._tn), kind, what, tok))

    def _fire_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, what, tok = heapq.heappop(self._timers)
            self._guard(kind, self._fire, kind, what, tok, now)

    def _fire(self, kind: str, what: Any, tok: int, now: float) -> None:
        if kind == "ready":
            if tok == what._token and what.status == RETRYING:
                with self.budget_lock:
                    ok = self.budget.acquire(now)
                if ok:
                    self.policy.push(what)
                else:  # the budget is spent: wait, do not fail
                    if not what.events or what.events[-1][1] != "retry-deferred":
                        self.event(what, "retry-deferred", "retry budget spent; waiting", now)
                    self._timer(now + 1.0, "ready", what, tok)
        elif kind == "timeout":
            if tok == what._token and what.status == RUNNING:
                self._timeout(what, now)
        elif kind == "deadline":
            if not what.done:
                self._late(what, "deadline passed before the job finished", now)
        elif kind == "breaker":
            job = self.breakers.probe(what, now)
            if job is not None:
                self.event(job, "probe", f"single probe for {what} after cooldown", now)
                self._dispatch([job], now)
        elif kind == "fetch":
            self.fetcher.kick(now, self.capacity(now) // 2)

    def _timeout(self, job: Job, now: float) -> None:
        # Dask cannot stop a running thread: the future is cancelled and released, the
        # function runs on until it returns, and its result is ignored (token bumped).
        fut = job._future
        job._token += 1
        try:
            self.client.cancel([fut])
        except Exception:
            pass
        self._failed(job, JobTimeout(f"job {job.id} ran past its timeout of {job.timeout} s"), "", now)

    # -- bookkeeping ---------------------------------------------------------------------
    def event(self, job: Job, kind: str, detail: str, now: float) -> None:
        job.events.append((now, kind, detail))
        self.store.event(job.id, now, kind, detail)


__all__ = ["CANCELLED", "DEAD", "DONE", "Admission"]
