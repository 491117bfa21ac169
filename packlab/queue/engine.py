"""The queue's driver thread: it owns the running state, feeds the pure core
(:mod:`.core`) and carries out its decisions.

It keeps at most ``max_in_flight`` futures on Dask, pops the next job from the policy,
handles completions (:mod:`.fetch` posts them here), timeouts, deadlines, backoff
timers and circuit breakers (:mod:`.breakers`); results are fetched off this thread.
Nothing ever sleeps on a worker: a retry waits in the timer heap (and its end is
stored, so a resumed retry waits out the rest of its backoff).

Handing jobs to Dask holds no lock. Before each hand-over the thread reads the lease
(a read: WAL readers take no lock); every attempt carries the lease's fencing token
(store path and driver id), and the worker checks that this driver still holds the lease
before it runs the function. So a driver that lost its lease hands nothing more to Dask
once it can know, and nothing it handed over in the instant before runs (the job is the
new driver's, which runs it). Records (running, done, events) go through the store's
writer, whose every transaction checks the lease.

Threads: the thread that creates a job (``submit``) or loads it (``resume``, ``get``)
fills it in before handing it over; from the :class:`~.core.Push` or
:class:`~.core.Resume` message on, only this thread changes it. Users block on the
queue's :class:`~.job.Signal`. One failing message is logged and recorded in
``Signal.error`` (raised by ``submit``/``wait``, shown by ``stats``).
"""

from __future__ import annotations

import itertools
import logging
import queue
import re
import threading
import time
import traceback
import uuid
from typing import Any

from distributed.client import FutureCancelledError

from ..errors import PacklabError
from . import core
from .breakers import Breakers
from .core import BREAKER, DEADLINE, FETCH, READY, TIMEOUT
from .events import Hub
from .fetch import Completions, Fetcher
from .job import Job, Signal
from .outcomes import Outcomes
from .payload import Payload, run_fenced
from .policies import Policy
from .retry import CircuitBreaker, Retry, RetryBudget
from .states import FAILED, POLL, QUEUED, RETRYING, RUNNING, Kind
from .store import Store

log = logging.getLogger("packlab.queue")


def _short(fn_name: str) -> str:
    """The dashboard's task name: the function's own name, Dask-key safe."""
    return re.sub(r"[^A-Za-z0-9_]", "_", fn_name.rsplit(".", 1)[-1]) or "job"


class Engine(Outcomes):
    """The queue's engine (see the module docstring). :class:`JobQueue` is its face and
    uses its narrow API: ``push``, ``resume``, ``rejected``, ``call``, ``stop``,
    ``snapshot``, ``event`` and the read-only ``jobs``, ``signal``, ``client``;
    :mod:`.control` uses ``withdraw``, ``enqueue``, ``record``, ``event``, ``lookup``."""

    def __init__(self, client, policy: Policy, store: Store, lease, retry: Retry, budget: RetryBudget,
                 breaker: CircuitBreaker, max_in_flight: int | None, factor: int, result_max: int,
                 hub: Hub):
        self.client, self.policy, self.store, self.lease, self.retry = client, policy, store, lease, retry
        self.budget, self.hub = budget, hub
        self.fixed_cap, self.factor, self.result_max = max_in_flight, factor, result_max
        self.fence = None if lease is None else (lease.abspath, lease.driver)
        self._tag = uuid.uuid4().hex[:8] if lease is None else lease.driver[:8]
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
        self._runtime: float | None = None
        self._samples = 0
        self._polled = 0.0
        self._handlers = {core.Push: self._on_push, core.Resume: self._on_resume,
                          core.Rejected: self._on_rejected, core.Call: self._on_call,
                          core.Results: self._on_results}
        self._fire = {READY: self._ready, TIMEOUT: self._timeout, DEADLINE: self._deadline,
                      BREAKER: self._probe, FETCH: self._fetch}
        self.fetcher = Fetcher(client, lambda batch, f: self.inbox.put(core.Results(batch, f)))
        self.completions = Completions(client, lambda items: self.inbox.put(core.Completed(items)))
        self.thread = threading.Thread(target=self._loop, name="packlab-queue", daemon=True)
        self.thread.start()

    # -- the narrow API ------------------------------------------------------------------
    def push(self, job: Job) -> None:
        self.inbox.put(core.Push(job))

    def resume(self, job: Job) -> None:
        self.inbox.put(core.Resume(job))

    def rejected(self, job: Job, error: BaseException) -> None:
        self.inbox.put(core.Rejected(job, error))

    def stop(self) -> None:
        self.inbox.put(core.Stop())

    def call(self, fn, timeout: float = 60.0) -> Any:
        """Run ``fn(now)`` in the driver thread and return its result (or raise its error)."""
        msg = core.Call(fn)
        self.inbox.put(msg)
        if not msg.done.wait(timeout):
            raise TimeoutError("the queue's loop did not answer")
        if isinstance(msg.box[0], BaseException):
            raise msg.box[0]
        return msg.box[0]

    def lookup(self, job_id: str) -> Job | None:
        """This session's job, or the store's (then this queue's from now on), or None."""
        job = self.jobs.get(job_id)
        if job is None:
            found = self.store.load([job_id], cv=self.signal)
            job = self.jobs.setdefault(job_id, found[0]) if found else None
        return job

    # Used by control (in the driver thread): take a job out of the running state or
    # the policy, put it back, record it.
    def withdraw(self, job: Job, now: float) -> None:
        """Take ``job`` out: end its attempt and cancel its future, or drop it from the
        policy (and from a breaker's held jobs)."""
        if job.status == RUNNING:
            fut = job._future
            self.end_attempt(job, now)
            if fut is not None:
                try:
                    self.client.cancel([fut])
                except Exception:
                    pass
            self.breakers.abandon(job.fn_name, now)
        else:
            self.policy.remove(job)
            self.breakers.forget(job)

    def enqueue(self, job: Job) -> None:
        job._cv = self.signal  # a job loaded from the store is this queue's from now on
        self.policy.push(job)

    def record(self, job: Job) -> None:
        self.store.update(job)

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        with self.budget_lock:
            budget = self.budget.stats(now)
        return {"policy": self.policy.name, "queued": len(self.policy), "in_flight": len(self.running),
                "max_in_flight": self.capacity(), "held": self.breakers.held_counts(),
                "breakers": self.breakers.stats(), "retry_budget": budget}

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
                now = time.time()
                self._guard("timers", self._fire_timers, now)
                if now - self._polled > POLL:
                    self._polled = now
                    self._guard("requests", self._requests, now)
                self._guard("admission", self._admit, now)  # refill freed slots first
                self._guard("fetch", self.fetcher.kick, now, self.capacity() // 2)
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
            if isinstance(msg, core.Completed):
                finished.extend(msg.items)
            elif isinstance(msg, core.Stop):
                self._stop()
                return True
            else:
                self._guard(type(msg).__name__.lower(), self._handlers[type(msg)], msg, now)
        for job, tok in finished:
            self._guard("done", self._completed, job, tok, now)
        return False

    def _on_push(self, msg: core.Push, now: float) -> None:
        job = msg.job
        if job.status in (QUEUED, RETRYING):
            if msg.ready_at is None:
                self.policy.push(job)
            else:  # a resumed retry: in the timer heap until the end of its backoff
                job._token += 1
                self._timer(msg.ready_at, READY, job, job._token)
            with self.budget_lock:
                self.budget.submitted(now)
            if job.deadline is not None:
                self._timer(job.deadline, DEADLINE, job, 0)

    def _on_resume(self, msg: core.Resume, now: float) -> None:
        job = msg.job
        was = job.status
        job._cv = self.signal
        if job.done():
            return
        job.status = RETRYING if was == RETRYING else QUEUED
        why = "was running when the last driver stopped" if was == RUNNING else f"was {was}"
        ready_at = job.next_attempt if job.status == RETRYING and (job.next_attempt or 0) > now else None
        if ready_at is not None:  # the rest of its backoff: a restart is no reason to hurry
            why += f"; next attempt in {ready_at - now:.3f} s, at the end of its backoff"
        self.event(job, Kind.RESUMED, why, now)
        self.store.update(job)
        self._on_push(core.Push(job, ready_at), now)

    def _on_rejected(self, msg: core.Rejected, now: float) -> None:
        job = msg.job
        if job.status != QUEUED:
            return
        err = (f"job {job.id} was not recorded, so it never runs: {msg.error}. Another process "
               f"submitted key={job.key!r} first; submit the key again to get that job.")
        job.status, job.error, job._exc = FAILED, err, PacklabError(err)
        job.events.append((now, Kind.REJECTED, err))
        self.hub.emit(Kind.REJECTED, job.id, job.owner, job.rank, job.fn_name, now, err, len(self.policy))

    def _on_call(self, msg: core.Call, now: float) -> None:
        try:
            msg.box.append(msg.fn(now))
        except BaseException as e:
            msg.box.append(e)
        msg.done.set()

    def _on_results(self, msg: core.Results, now: float) -> None:
        self.fetcher.finished()
        try:
            outcomes = msg.fetched.result()
        except Exception as e:  # the fetch itself broke: every attempt of the batch failed
            outcomes = [(False, e, traceback.format_exc())] * len(msg.batch)
        for (job, tok, _), (ok, value, tb) in zip(msg.batch, outcomes, strict=True):
            if tok != job._token or job.status != RUNNING:
                continue  # cancelled (or cancelled and requeued) meanwhile
            if ok:
                result, runtime = value  # payload.run timed the call on its worker
                self._guard("result", self._succeeded, job, result, now, runtime)
            else:
                self._guard("result", self._failed, job, value, tb, now)

    def _requests(self, now: float) -> None:
        """Act on what other processes asked (``packlab queue cancel/requeue``)."""
        from . import control

        rows = self.lease.requests() if self.lease is not None else self.store.requests()
        if rows:
            control.apply_requests(self, rows, now)
            self.store.write("DELETE FROM requests WHERE rowid<=?", (rows[-1][0],))

    def _stop(self) -> None:
        # Records of in-flight jobs stay "running": resume() runs them again.
        self.signal.closed = True
        self.fetcher.shutdown()
        self.completions.close()
        futs = [j._future for j in self.running.values() if j._future is not None]
        if futs:
            try:
                self.client.cancel(futs)
            except Exception:
                pass

    # -- admission -----------------------------------------------------------------------
    def capacity(self, now: float | None = None) -> int:
        """``max_in_flight``: fixed, or :func:`.core.capacity` of the cluster's threads,
        refreshed every second so it follows the cluster as it scales."""
        if self.fixed_cap:
            return self.fixed_cap
        now = time.time() if now is None else now
        t, cap = self._cap
        if now - t > 1.0:
            try:
                threads = sum(self.client.nthreads().values())
            except Exception:
                threads = 0
            cap = core.capacity(threads, self.factor, self._runtime, self._samples)
            self._cap = (now, cap)
        return cap

    def _admit(self, now: float) -> None:
        room = core.refill(self.capacity(now), len(self.running))
        batch: list[Job] = []
        while len(batch) < room:
            job = self.policy.pop(now)
            if job is None:
                break
            if not self.breakers.allow(job, now):
                self.policy.finished(job, 0.0, now)
                state = self.breakers.state(job.fn_name)
                self.event(job, Kind.HELD, f"circuit {state} for {job.fn_name}", now)
                continue
            batch.append(job)
        if batch:
            self._dispatch(batch, now)

    def _dispatch(self, jobs: list[Job], now: float) -> None:
        # One client.map per run of jobs with the same resources: per-call overhead in
        # the client and the scheduler is what limits throughput of tiny jobs.
        if self.lease is not None:
            try:
                held = self.lease.held()
            except Exception as e:  # cannot tell: hand nothing over, try again next turn
                log.warning("packlab queue: could not read the lease of %s (%s)", self.store.path, e)
                held = None
            if not held:
                for job in jobs:
                    self.policy.finished(job, 0.0, now)
                    self.policy.push(job)
                if held is False:
                    self.lease.mark_lost()  # stops the loop: it runs nothing more
                return
        i = 0
        while i < len(jobs):
            j = i + 1
            while j < len(jobs) and jobs[j].resources == jobs[i].resources:
                j += 1
            self._dispatch_run(jobs[i:j], now)
            i = j

    def _dispatch_run(self, jobs: list[Job], now: float) -> None:
        self._dispatched += 1
        # The driver's own tag keeps keys apart across drivers on a shared cluster: a
        # resumed attempt must not pick up (or be cancelled with) an earlier driver's
        # future of the same key; the attempt number and token, within this driver.
        keys = [f"{_short(j.fn_name)}-packlab-{j.id}-{j.attempts + 1}.{j._token + 1}-{self._tag}"
                for j in jobs]
        try:
            # Dask's priority follows packlab's order: an earlier batch runs first, and
            # Dask keeps submission order within a batch.
            futs = self.client.map(run_fenced, [Payload(j._payload) for j in jobs], key=keys,
                                   priority=-self._dispatched, pure=False, resources=jobs[0].resources,
                                   retries=0, fence=self.fence)
        except Exception as e:  # recorded running all the same: the attempt counts, and fails
            futs = e
        for job in jobs:
            job.attempts += 1
            job._token += 1
            job.status, job._started, job.next_attempt = RUNNING, now, None
            self.running[job.id] = job
            self.event(job, Kind.RUNNING, f"attempt {job.attempts}", now)
            self.store.update(job)
        if isinstance(futs, Exception):
            for job in jobs:
                self._failed(job, FutureCancelledError(f"packlab-{job.id}", reason=str(futs)), "", now)
            return
        for job, fut in zip(jobs, futs, strict=True):
            job._future = fut
            if job.timeout:
                self._timer(now + job.timeout, TIMEOUT, job, job._token)
            if job.deadline is not None and now > job.deadline:
                self._late(job, "started after its deadline", now)
        self.completions.add([(j, j._token, j._future) for j in jobs])

    # -- bookkeeping ---------------------------------------------------------------------
    def event(self, job: Job, kind: str, detail: str, now: float) -> None:
        job.events.append((now, kind, detail))
        self.store.event(job.id, now, kind, detail)
        self.hub.emit(kind, job.id, job.owner, job.rank, job.fn_name, now, detail, len(self.policy))


__all__ = ["Engine"]
