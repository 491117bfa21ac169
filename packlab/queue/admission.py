"""The admission loop: one background thread that owns the queue's state.

It keeps at most ``max_in_flight`` futures on Dask, pops the next job from the policy,
handles completions (Dask's done-callbacks only post a message here), timeouts,
deadlines, backoff timers and circuit breakers. Nothing ever sleeps on a worker:
a retry waits in the timer heap. Only this thread mutates jobs, so there are no locks
around job state; users block on one condition variable.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import queue
import re
import threading
import time
import traceback
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import cloudpickle
from distributed.client import FutureCancelledError

try:  # the coroutine behind Future.add_done_callback; batched here (see Admission._watch)
    from distributed.client import done_callback as _done_callback
except ImportError:  # pragma: no cover - a future distributed without it
    _done_callback = None

from .job import CANCELLED, DEAD, DONE, FAILED, QUEUED, RETRYING, RUNNING, Job, JobTimeout
from .payload import Payload
from .payload import run as _run_payload
from .policies import Policy
from .retry import CLOSED, OPEN, CircuitBreaker, Retry, RetryBudget
from .store import Store

log = logging.getLogger("packlab.queue")
_FETCH_WAIT = 0.02  # s: results wait at most this long to share a gather


def _short(fn_name: str) -> str:
    """The dashboard's task name: the function's own name, Dask-key safe."""
    return re.sub(r"[^A-Za-z0-9_]", "_", fn_name.rsplit(".", 1)[-1]) or "job"


class Admission:
    """The queue's engine (see the module docstring); :class:`JobQueue` is its face."""

    def __init__(self, client, policy: Policy, store: Store, retry: Retry, budget: RetryBudget,
                 breaker: CircuitBreaker, max_in_flight: int | None, factor: int, result_max: int):
        self.client, self.policy, self.store, self.retry = client, policy, store, retry
        self.budget, self._breaker_template = budget, breaker
        self.fixed_cap, self.factor, self.result_max = max_in_flight, factor, result_max
        self.cv = threading.Condition()
        self.cv.closed = False  # read by Job.result(): a closed queue finishes nothing more
        self.budget_lock = threading.Lock()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.jobs: dict[str, Job] = {}
        self.running: dict[str, Job] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self.held: dict[str, deque] = defaultdict(deque)
        self._timers: list = []
        self._tn = itertools.count()
        self._dispatched = 0
        self._cap = (0.0, factor)
        self.error: BaseException | None = None
        self._fetcher = ThreadPoolExecutor(1, thread_name_prefix="packlab-queue-fetch")
        self._to_fetch: list[Job] = []
        self._fetch_since = 0.0
        self._fetching = False
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
            try:
                stop, ok = self._handle(msgs)
                if not stop:
                    self._fire_timers(time.time())
                    self._admit(time.time())  # refill the freed slots before fetching results
                    if ok:
                        self._fetch(ok)
            except Exception as e:  # a bug must not silently kill the queue: keep serving
                self.error = e
                log.exception("packlab queue loop error")
            with self.cv:
                self.cv.notify_all()

    def _handle(self, msgs: list) -> tuple[bool, list[Job]]:
        now = time.time()
        finished = []
        for msg in msgs:
            kind = msg[0]
            if kind == "done":
                finished.append(msg[1:])
            elif kind == "push":
                job = msg[1]
                if job.status in (QUEUED, RETRYING):
                    self.policy.push(job)
                    with self.budget_lock:
                        self.budget.submitted(now)
                    if job.deadline is not None:
                        self._timer(job.deadline, "deadline", job, 0)
            elif kind == "call":  # run fn in the loop thread (cancel, requeue), report back
                _, fn, box, ev = msg
                try:
                    box.append(fn(now))
                except BaseException as e:
                    box.append(e)
                ev.set()
            elif kind == "results":
                self._fetching = False
                self._gathered(msg[1], msg[2], now)
                self._fetch([])
            elif kind == "stop":
                self._stop()
                return True, []
        return False, (self._completed(finished, now) if finished else [])

    def _stop(self) -> None:
        # Records of in-flight jobs stay "running": resume() runs them again.
        self.cv.closed = True
        self._fetcher.shutdown(wait=False)
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
            br = self.breakers.get(job.fn_name)
            if br is not None and not br.allow(now):
                self.policy.finished(job, 0.0, now)
                self.held[job.fn_name].append(job)
                self.event(job, "held", f"circuit {br.state} for {job.fn_name}", now)
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
        for job in jobs:
            job.attempts += 1
            job._token += 1
            job.status, job._started = RUNNING, now
            self.running[job.id] = job
        self._dispatched += 1
        try:
            # Dask's priority follows packlab's order: an earlier batch runs first, and
            # Dask keeps submission order within a batch.
            futs = self.client.map(_run_payload, [Payload(j._payload) for j in jobs],
                                   key=[f"{_short(j.fn_name)}-packlab-{j.id}-{j._token}" for j in jobs],
                                   priority=-self._dispatched, pure=False, resources=jobs[0].resources,
                                   retries=0)
        except Exception as e:
            for job in jobs:
                self.event(job, "running", f"attempt {job.attempts}", now)
                self._failed(job, FutureCancelledError(f"packlab-{job.id}", reason=str(e)), "", now)
            return
        for job, fut in zip(jobs, futs, strict=True):
            job._future = fut
            if _done_callback is None:
                fut.add_done_callback(lambda _f, j=job, t=job._token: self.inbox.put(("done", j, t)))
            if job.timeout:
                self._timer(now + job.timeout, "timeout", job, job._token)
            if job.deadline is not None and now > job.deadline:
                self._late(job, "started after its deadline", now)
            self.event(job, "running", f"attempt {job.attempts}", now)
            self.store.update(job)
        if _done_callback is not None:
            self.client.loop.add_callback(self._watch, [(j, j._token, j._future) for j in jobs])

    async def _watch(self, batch: list) -> None:
        # Runs on the client's event loop: one wake-up per batch instead of one per future
        # (what Future.add_done_callback costs), and no hop through Dask's callback thread.
        def post(_fut, job, tok):
            self.inbox.put(("done", job, tok))

        await asyncio.gather(*(_done_callback(f, partial(post, job=j, tok=t)) for j, t, f in batch))

    # -- outcomes ------------------------------------------------------------------------
    def _completed(self, items: list, now: float) -> list[Job]:
        """Handle failed attempts; return the succeeded jobs, their slots already freed."""
        ok = []
        for job, tok in items:
            if tok != job._token or job.status != RUNNING or job._future is None:
                continue  # an attempt that timed out or was cancelled: its end is ignored
            fut = job._future
            if fut.status == "finished":
                ok.append(job)
                self.running.pop(job.id, None)
            elif fut.status == "error":
                exc = fut.exception()
                tb = "".join(traceback.format_exception(type(exc), exc, fut.traceback()))
                self._failed(job, exc, tb, now)
            else:
                self._failed(job, FutureCancelledError(fut.key, reason="lost by the scheduler"), "", now)
        return ok

    def _fetch(self, ok: list[Job]) -> None:
        # Fetch results off the loop thread (a blocking gather would leave freed slots
        # empty for a round trip), one gather at a time: what finishes meanwhile is
        # fetched together next, so under load a gather carries many results.
        now = time.time()
        if ok and not self._to_fetch:
            self._fetch_since = now
            self._timer(now + _FETCH_WAIT, "fetch", None, 0)
        self._to_fetch.extend(ok)
        if self._fetching or not self._to_fetch:
            return
        if len(self._to_fetch) < self.capacity(now) // 2 and now < self._fetch_since + _FETCH_WAIT:
            return  # a few more milliseconds make one gather out of several
        batch, self._to_fetch = self._to_fetch, []
        self._fetching = True
        f = self._fetcher.submit(self.client.gather, [j._future for j in batch])
        f.add_done_callback(lambda f: self.inbox.put(("results", batch, f)))

    def _gathered(self, ok: list[Job], fetched, now: float) -> None:
        try:  # one round trip for the whole batch
            results = fetched.result()
        except Exception:
            results = None
        for i, job in enumerate(ok):
            if job.status != RUNNING or job._future is None:
                continue  # cancelled meanwhile
            if results is not None:
                self._succeeded(job, results[i], now)
                continue
            try:
                self._succeeded(job, job._future.result(), now)
            except Exception as e:
                self._failed(job, e, traceback.format_exc(), now)

    def _end_attempt(self, job: Job, now: float) -> float:
        self.running.pop(job.id, None)
        job._future = None
        runtime = max(0.0, now - job._started)
        self.policy.finished(job, runtime, now)
        return runtime

    def _succeeded(self, job: Job, result: Any, now: float) -> None:
        runtime = self._end_attempt(job, now)
        br = self.breakers.get(job.fn_name)
        if br is not None:
            was = br.state
            br.success(now)
            if was != CLOSED:
                self._release(job.fn_name, now)
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
        self._end_attempt(job, now)
        br = self.breaker(job.fn_name)
        was = br.state
        br.failure(now)
        if br.state == OPEN and was != OPEN:
            self._timer(br.reopens_at(), "breaker", job.fn_name, 0)
        retry = job.retry or self.retry
        verdict = retry.classify(exc)
        job.error, job.traceback, job._exc = f"{type(exc).__name__}: {exc}", tb, exc
        self.event(job, "failed", f"attempt {job.attempts}: {job.error}", now)
        if verdict == "retry" and job.attempts < retry.attempts:
            delay = retry.delay(job.attempts)
            job.status = RETRYING
            job._token += 1
            self._timer(now + delay, "ready", job, job._token)
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
        self.store.update(job, error=job.error, traceback=tb)

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
                self._probe(what, now)
            elif kind == "fetch":
                self._fetch([])

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

    # -- circuit breakers ----------------------------------------------------------------
    def breaker(self, fn_name: str) -> CircuitBreaker:
        br = self.breakers.get(fn_name)
        if br is None:
            br = self.breakers[fn_name] = self._breaker_template.fresh()
        return br

    def _probe(self, fn_name: str, now: float) -> None:
        held = self.held.get(fn_name)
        br = self.breakers[fn_name]
        if held and br.allow(now):
            job = held.popleft()
            self.event(job, "probe", f"single probe for {fn_name} after cooldown", now)
            self._dispatch([job], now)

    def _release(self, fn_name: str, now: float) -> None:
        held = self.held.pop(fn_name, None) or ()
        for job in held:
            self.event(job, "released", f"circuit closed for {fn_name}", now)
            self.policy.push(job)

    # -- cancel / requeue (run in the loop thread through call()) ------------------------
    def cancel_now(self, job: Job, now: float) -> bool:
        if job.done:
            return False
        if job.status == RUNNING:
            fut = job._future
            self._end_attempt(job, now)
            if fut is not None:
                try:
                    self.client.cancel([fut])
                except Exception:
                    pass
            br = self.breakers.get(job.fn_name)
            if br is not None:
                br.abandon(now)
        else:
            self.policy.remove(job)
            held = self.held.get(job.fn_name)
            if held and job in held:
                held.remove(job)
        job._token += 1
        job.status = CANCELLED
        self.event(job, "cancelled", "by request", now)
        self.store.update(job)
        return True

    def requeue_now(self, job: Job, now: float) -> Job:
        job._token += 1
        was, n = job.status, job.attempts
        job.status, job.attempts, job._exc = QUEUED, 0, None
        self.event(job, "requeued", f"was {was} after {n} attempts", now)
        self.store.update(job)
        self.policy.push(job)
        return job

    # -- bookkeeping ---------------------------------------------------------------------
    def event(self, job: Job, kind: str, detail: str, now: float) -> None:
        job.events.append((now, kind, detail))
        self.store.event(job.id, now, kind, detail)


__all__ = ["CANCELLED", "DEAD", "DONE", "Admission"]
