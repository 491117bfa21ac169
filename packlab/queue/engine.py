"""The queue's driver thread: it feeds the pure core (:class:`.machine.StateMachine`, which
holds the running set, the timers and the admission decisions) and carries out its
decisions: hand-overs to Dask, cancels, records, subscriber events, fetches.

The core keeps at most ``max_in_flight`` futures on Dask and picks the next job; this thread
turns completions (:mod:`.fetch` posts them here) into core events and ticks the core's
timers (timeouts, deadlines, backoff, circuit breakers); results are fetched off this thread.
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

import contextlib
import logging
import queue
import re
import threading
import time
import traceback
import uuid
from typing import Any

import cloudpickle
import dask
from distributed.client import FutureCancelledError

from .. import config
from . import control, core, spans
from .events import Hub
from .fetch import Completions, Fetcher, Graveyard, ended
from .index import JobIndex
from .job import Job, Signal
from .jobstore import Store
from .machine import StateMachine
from .payload import Payload, run_fenced
from .policies import Policy
from .retry import CircuitBreaker, Retry, RetryBudget
from .spread import Spread
from .states import POLL

log = logging.getLogger("packlab.queue")
THREADS_EVERY = 1.0  # s: how often max_in_flight follows the cluster's threads


def _short(fn_name: str) -> str:
    """The dashboard's task name: the function's own name, Dask-key safe."""
    return re.sub(r"[^A-Za-z0-9_]", "_", fn_name.rsplit(".", 1)[-1]) or "job"


class Engine:
    """The queue's driver (see the module docstring). :class:`JobQueue` is its face and
    uses its narrow API: ``push``, ``resume``, ``rejected``, ``ask``, ``stop``,
    ``snapshot``, ``event`` and the read-only ``jobs``, ``signal``, ``client``;
    :mod:`.control` uses ``apply`` and ``lookup``."""

    def __init__(self, client, policy: Policy, store: Store, lease, retry: Retry, budget: RetryBudget,
                 breaker: CircuitBreaker, max_in_flight: int | None, factor: int, result_max: int,
                 hub: Hub):
        self.client, self.store, self.lease, self.hub = client, store, lease, hub
        self.result_max = result_max
        self.core = StateMachine(policy, retry, budget, breaker, max_in_flight, factor,
                                 fenced=lease is not None)
        self.fence = None if lease is None else (lease.abspath, lease.driver)
        self._tag = uuid.uuid4().hex[:8] if lease is None else lease.driver[:8]
        self.signal = Signal()
        self._lock = threading.Lock()  # the core is read by snapshot() from other threads
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.jobs = JobIndex()  # this session's jobs; finished ones held weakly
        self._dispatched = 0
        self.spans = False  # tag each hand-over with its Dask spans (when telemetry records them)
        self.spread = Spread() if config.get("queue.place-tiny-jobs") else None  # see .spread
        self._threads_at = -THREADS_EVERY
        self._fetch_at: float | None = None
        self._polled = 0.0
        self._do = {core.HandOver: self._hand_over, core.CancelFutures: self._cancel_futures,
                    core.Record: self._record, core.Update: self._update, core.Watch: self._watch,
                    core.Fetch: self._fetch, core.LeaseLost: self._lease_lost}
        self.graveyard = Graveyard(client)  # futures of ended attempts
        self.fetcher = Fetcher(client, lambda batch, f: self.inbox.put(core.Results(batch, f)))
        self.completions = Completions(client, lambda items: self.inbox.put(core.Completed(items)))
        self._threads(time.time())  # max_in_flight is right from the start
        self.thread = threading.Thread(target=self._loop, name="packlab-queue", daemon=True)
        self.thread.start()

    # -- the narrow API ------------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        return self.core.policy

    @property
    def retry(self) -> Retry:
        return self.core.retry

    @property
    def running(self) -> dict[str, Job]:
        return self.core.running

    @property
    def breakers(self):
        return self.core.breakers

    def push(self, job: Job) -> None:
        self.inbox.put(core.Push(job))

    def resume(self, job: Job) -> None:
        job._cv = self.signal
        self.inbox.put(core.Resume(job))

    def rejected(self, job: Job, error: BaseException) -> None:
        self.inbox.put(core.Rejected(job, error))

    def stop(self) -> None:
        self.inbox.put(core.Stop())

    def fail(self, error: BaseException) -> None:
        """The store failed (``error``, a StoreError): stop as :meth:`stop` does, and make
        waiters raise ``error`` (from any thread: the store's writer calls it)."""
        self.signal.failure = error
        self.stop()

    def ask(self, event: Any, timeout: float = 60.0) -> Any:
        """Have the driver thread apply a core ``event`` (Cancel, Requeue); return its
        :class:`~.core.Reply` (or raise the error it carries)."""
        return self._wait(core.Ask(event), timeout)

    def call(self, fn, timeout: float = 60.0) -> Any:
        """Run ``fn(now)`` in the driver thread and return its result (or raise its error)."""
        return self._wait(core.Call(fn), timeout)

    def _wait(self, msg, timeout: float) -> Any:
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
            self.store.flush(check=False)  # a finished job nobody holds: its final record
            found = self.store.load([job_id], cv=self.signal)
            job = self.jobs.setdefault(job_id, found[0]) if found else None
        return job

    def capacity(self) -> int:
        return self.core.capacity()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.core.snapshot(time.time())

    def event(self, job: Job, kind: str, detail: str, now: float) -> None:
        """Record an event of a job not yet in the core's hands (``submit``)."""
        job.events.append((now, kind, detail))
        self.store.event(job.id, now, kind, detail)
        self.hub.emit(kind, job.id, job.owner, job.rank, job.fn_name, now, detail, len(self.core.policy))

    # -- feeding the core ----------------------------------------------------------------
    def apply(self, event: Any, now: float) -> Any:
        """Feed ``event`` (or a list of events) to the core and carry out its decisions
        (in this thread only); returns the :class:`~.core.Reply` value, if any."""
        if type(event) is core.Requeue:
            event.job._cv = self.signal  # a job loaded from the store is this queue's from now on
        with self._lock:
            try:
                if type(event) is list:
                    decisions = self.core.handle_all(event, now)
                else:
                    decisions = self.core.handle(event, now)
            except Exception as e:
                self._error(type(event).__name__.lower(), e)
                decisions = self.core.take()  # what it decided before the error
        reply = None
        for d in decisions:
            if type(d) is core.Reply:
                reply = d.value
                continue
            try:
                self._do[type(d)](d, now)
            except Exception as e:
                self._error(type(d).__name__.lower(), e)
        return reply

    def _error(self, what: str, e: BaseException) -> None:
        """A bug in one step is logged and surfaced, and the loop serves on."""
        if self.signal.error is None:
            self.signal.error = f"{what}: {type(e).__name__}: {e}"
        log.error("packlab queue loop error (%s)", what, exc_info=e)

    # -- the loop ------------------------------------------------------------------------
    def _loop(self) -> None:
        stop = False
        while not stop:
            wait = 0.2
            for due in (self.core.next_due(), self._fetch_at):
                if due is not None:
                    wait = min(wait, max(0.0, due - time.time()))
            msgs = []
            try:
                msgs.append(self.inbox.get(timeout=wait))
                while len(msgs) < 10000:
                    msgs.append(self.inbox.get_nowait())
            except queue.Empty:
                pass
            stop = self._handle(msgs)
            msgs = None  # its results' futures go with the graveyard (see fetch.Graveyard)
            if not stop:
                now = time.time()
                self.apply(core.Tick(), now)
                if now - self._polled > POLL:
                    self._polled = now
                    self._step("requests", self._requests, now)
                self._step("threads", self._threads, now)
                self.apply(core.Admit(), now)  # refill freed slots first
                self._step("fetch", self._kick, now)
            self.graveyard.bury(time.time(), self.signal.closed)
            self.signal.notify()

    def _step(self, what: str, fn, now: float) -> None:
        try:
            fn(now)
        except Exception as e:
            self._error(what, e)

    def _handle(self, msgs: list) -> bool:
        now = time.time()
        finished = []
        for msg in msgs:
            kind = type(msg)
            if kind is core.Completed:
                finished.extend(msg.items)
            elif kind is core.Results:
                self.fetcher.finished()
                try:
                    outcomes = msg.fetched.result()
                except Exception as e:  # the fetch itself broke: every attempt of the batch failed
                    outcomes = [(False, e, traceback.format_exc())] * len(msg.batch)
                self.apply(core.Fetched(msg.batch, outcomes), now)
                self.graveyard.add(fut for _, _, fut in msg.batch)
            elif kind is core.Stop:
                self.signal.closed = True
                self.fetcher.shutdown()
                self.completions.close()
                self.apply(msg, now)  # cancel in-flight futures; their records stay running
                return True
            elif kind is core.Ask or kind is core.Call:
                try:
                    msg.box.append(self.apply(msg.event, now) if kind is core.Ask else msg.fn(now))
                except BaseException as e:
                    msg.box.append(e)
                msg.done.set()
            else:  # Push, Resume, Rejected
                self.apply(msg, now)
        if finished:
            self.graveyard.add(job._future for job, _ in finished)
            self.apply([ended(job, tok) for job, tok in finished], now)
        return False

    def _requests(self, now: float) -> None:
        """Act on what other processes asked (``packlab queue cancel/requeue``)."""
        rows = self.lease.requests() if self.lease is not None else self.store.requests()
        if rows:
            control.apply_requests(self, rows, now)
            self.store.write("DELETE FROM requests WHERE rowid<=?", (rows[-1][0],))

    def _threads(self, now: float) -> None:
        """``max_in_flight`` follows the cluster as it scales (unless fixed), and so do
        the slots tiny jobs are spread over (:mod:`.spread`)."""
        if (self.core.fixed_cap and self.spread is None) or now - self._threads_at < THREADS_EVERY:
            return  # nothing follows the cluster, or it looked less than a second ago
        self._threads_at = now
        try:
            nthreads = self.client.nthreads()
        except Exception:
            nthreads = {}
        if self.spread is not None:
            self.spread.workers(nthreads)
        if not self.core.fixed_cap:
            self.apply(core.Threads(sum(nthreads.values())), now)

    def _kick(self, now: float) -> None:
        self.fetcher.kick(now, core.fetch_enough(self.core.capacity(), len(self.core.running)))
        if self._fetch_at is not None and now >= self._fetch_at:
            self._fetch_at = None

    # -- carrying out decisions ----------------------------------------------------------
    def _hand_over(self, d: core.HandOver, now: float) -> None:
        # One client.map per run of jobs with the same resources: per-call overhead in
        # the client and the scheduler is what limits throughput of tiny jobs.
        jobs = d.jobs
        if self.store.failed is not None:  # nothing it could not record may run: the loop stops
            self.apply(core.Unsent(jobs), now)
            return
        if self.lease is not None:
            try:
                held = self.lease.held()
            except Exception as e:  # cannot tell: hand nothing over, try again next turn
                log.warning("packlab queue: could not read the lease of %s (%s)", self.store.path, e)
                held = None
            if not held:
                self.apply(core.Unsent(jobs), now)
                if held is False:
                    self.lease.mark_lost()  # stops the loop: it runs nothing more
                return
        i = 0
        while i < len(jobs):
            j = i + 1
            while j < len(jobs) and jobs[j].resources == jobs[i].resources:
                j += 1
            self._map(jobs[i:j], now)
            i = j

    def _map(self, jobs: list[Job], now: float) -> None:
        self._dispatched += 1
        # The driver's own tag keeps keys apart across drivers on a shared cluster: a
        # resumed attempt must not pick up (or be cancelled with) an earlier driver's
        # future of the same key; the attempt number and token, within this driver. The
        # span's word gives each span a TaskGroup of its own (see .spans).
        names = [spans.span_name(j.owner, j.fn_name) for j in jobs]
        keys = [f"{_short(j.fn_name)}-{spans.group_word(name)}-packlab-{j.id}-"
                f"{j.attempts + 1}.{j._token + 1}-{self._tag}" for j, name in zip(jobs, names, strict=True)]
        try:
            # Dask's priority follows packlab's order: an earlier batch runs first, and
            # Dask keeps submission order within a batch. dask.annotate is this thread's
            # own (a context variable): it tags nothing the user submits meanwhile. One
            # graph update carries every span of the hand-over (see spans.by_key); tiny
            # jobs go straight to a worker each (see .spread).
            ann = {"span": spans.by_key(keys, names)} if self.spans else {}
            if self.spread is not None and self.core.short and not jobs[0].resources:
                ann.update(self.spread.annotations([(j.id, k) for j, k in zip(jobs, keys, strict=True)],
                                                    self.core.running))
            with dask.annotate(**ann) if ann else contextlib.nullcontext():
                futs = self.client.map(run_fenced, [Payload(j._payload) for j in jobs], key=keys,
                                       priority=-self._dispatched, pure=False, resources=jobs[0].resources,
                                       retries=0, fence=self.fence)
        except Exception as e:  # recorded running all the same: the attempt counts, and fails
            errors = [FutureCancelledError(f"packlab-{j.id}", reason=str(e)) for j in jobs]
            self.apply(core.Sent(jobs, None, errors), now)
            return
        self.apply(core.Sent(jobs, futs), now)

    def _cancel_futures(self, d: core.CancelFutures, now: float) -> None:
        self.graveyard.add(d.futures)
        try:
            self.client.cancel(d.futures)
        except Exception:
            pass

    def _record(self, d: core.Record, now: float) -> None:
        job = d.job
        self.jobs.note(job)
        if d.stored:
            self.store.event(job.id, d.t, d.kind, d.detail)
        self.hub.emit(d.kind, job.id, job.owner, job.rank, job.fn_name, d.t, d.detail, d.depth)

    def _update(self, d: core.Update, now: float) -> None:
        job = d.job
        self.jobs.note(job)
        if not d.result:
            self.store.update(job, **(d.fields or {}))
            return
        blob = None
        try:
            blob = cloudpickle.dumps(job._result)
            if len(blob) > self.result_max:
                blob = None
        except Exception:
            pass
        self.store.update(job, result=blob, has_result=int(blob is not None))

    def _watch(self, d: core.Watch, now: float) -> None:
        self.completions.add(d.items)

    def _fetch(self, d: core.Fetch, now: float) -> None:
        when = self.fetcher.add(d.items, now)
        if when is not None and (self._fetch_at is None or when < self._fetch_at):
            self._fetch_at = when

    def _lease_lost(self, d: core.LeaseLost, now: float) -> None:
        if self.lease is not None:
            self.lease.mark_lost()


__all__ = ["Engine"]
