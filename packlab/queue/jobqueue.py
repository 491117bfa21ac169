"""``packlab.JobQueue``: admission, ordering, retries and persistence in front of Dask.

Dask runs whatever it is given, at once. The queue decides *what* it is given and
*when*: jobs wait in the queue's policy, at most ``max_in_flight`` are on Dask at a
time, failed attempts wait out their backoff in the queue (never on a worker), and
every job lives in a SQLite store so a dead driver loses nothing.

Guarantees
----------
* One live queue drives a store: opening a store another live ``JobQueue`` drives (in
  any process, on any host) raises a LeaseError naming it (pid, host, since, last
  heartbeat). A dead driver is taken over: at once when it ran on this host, after
  ``packlab.queue.lease-timeout`` without a heartbeat otherwise, or with
  ``take_over=True``. A queue that lost its lease stops: it dispatches and writes nothing
  more, and raises (:class:`~packlab.errors.LeaseError`). It runs no job even before it
  notices: before each hand-over to Dask it reads the lease (no lock is held across a
  call into Dask), and every attempt carries a fencing token that the worker checks
  before it runs the function, so an attempt handed over in the instant after a
  take-over is refused there, and the new driver runs the job.
* A job is committed to the store before it is handed to Dask; it is durable once
  committed (``map`` and ``flush`` wait for that, ``submit`` does not).
* After the driver dies, ``JobQueue(cluster, store=same).resume()`` runs again every
  job that was queued, retrying or running: execution is *at least once*. A job that was
  retrying starts no earlier than the end of its backoff, which is stored
  (``Job.next_attempt``); it waits in the queue, not on a worker. A job that
  was running at the crash may have run (fully or partly) before. Submitting the key
  of such an unfinished job runs that job (the same as ``resume()`` does for it);
  ``get(id)`` only looks: its job runs once ``resume()`` is called.
* A job recorded ``done`` never runs again, and submitting an idempotency ``key`` that
  exists returns the existing job: a keyed job succeeds *at most once* in the record.
  Side effects happen exactly once only if the function makes them idempotent on the
  key (e.g. ``INSERT OR IGNORE``, or write to a temporary name and rename).

Timeouts
--------
The clock starts when the queue hands the job to Dask (it includes a wait in the
worker's queue, which ``max_in_flight`` keeps short). Past ``timeout`` the job's Dask
future is cancelled and released and the attempt fails with :class:`JobTimeout`,
retried like any transient error. Dask cannot stop a running thread: the function
keeps running on its worker thread, occupying it, until it returns; its result is
then ignored. Make long functions check a time budget if that matters.

The ``fair-share`` policy, by contrast, charges an owner the run time its job's worker
measured around the call, not the wait in Dask before it; an attempt that failed, timed
out or was cancelled is charged the time since it was handed to Dask.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections.abc import Iterable
from typing import Any

from distributed import Client

from .. import checks, config, hooks
from ..clusters import registry
from ..errors import PacklabError, QueueClosed, QueueFailed, bad_value
from ..units import memory_bytes
from . import core
from . import payload as _payload
from .engine import Engine
from .events import Hub
from .job import Job, check_requeueable, check_tags, deadline_epoch, priority_rank, timeout_seconds
from .jobstore import Store
from .lease import Lease
from .policies import Policy, get_policy
from .retry import CircuitBreaker, Retry, RetryBudget, as_retry
from .states import TERMINAL, Kind
from .views import Views


def _client_of(obj: Any) -> tuple[Client, bool]:
    """The client to run jobs with, and whether the queue made it (and must close it)."""
    if isinstance(obj, Client):
        return obj, False
    client = getattr(obj, "client", None)  # PackCluster, or a deploy Cluster with one
    if isinstance(client, Client):
        return client, False
    if hasattr(obj, "scheduler_address"):
        return Client(obj, security=getattr(obj, "security", None)), True
    raise bad_value("cluster_or_client", obj, "a packlab PackCluster, a Dask cluster or a distributed.Client")


class JobQueue(Views):
    """A persistent job queue with policies, retries and a dead-letter queue, on Dask.

    Parameters
    ----------
    cluster_or_client : PackCluster, Dask cluster or distributed.Client
        Where jobs run.
    policy : {"fifo", "priority", "fair-share", "deadline"} or Policy
        Which queued job runs next (default ``packlab.queue.policy``). Pass an instance
        for options, e.g. ``FairShare(weights={"alice": 2})`` or ``Priority(aging="5m")``.
    store : str, default ``packlab.queue.store`` ("packlab.db")
        The SQLite file (or ``sqlite:///path`` URL) holding jobs, payloads and events.
    max_in_flight : int, optional
        Jobs on Dask at once. Default: the cluster's worker threads times
        ``packlab.queue.in-flight-factor``, following the cluster as it scales.
    retry : Retry, int or False, optional
        The default retry of every job (default from ``packlab.queue.retry``).
    retry_budget : RetryBudget or float, optional
        Retries may not exceed this fraction of recent submissions (default
        ``packlab.queue.retry-budget``); a retry over budget waits, it is not dropped.
    breaker : CircuitBreaker, optional
        The per-function circuit breaker settings (``packlab.queue.breaker``).
    take_over : bool, default False
        One live queue drives a store (see Guarantees); a dead driver's store is taken
        over anyway. ``True`` takes it at once from a driver you know is gone (e.g. on
        another host); if it still runs, it stops with an error before its next write.

    Examples
    --------
    >>> import packlab, tempfile, os
    >>> store = os.path.join(tempfile.mkdtemp(), "q.db")
    >>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
    ...     with packlab.JobQueue(pc, store=store) as q:
    ...         jobs = q.map(abs, [-1, -2, 3])
    ...         _ = q.wait()
    ...         [j.result() for j in jobs]
    [1, 2, 3]
    """

    def __init__(self, cluster_or_client: Any, policy: str | Policy | None = None,
                 store: str | None = None, max_in_flight: int | None = None,
                 retry: Retry | int | bool | None = None, *, retry_budget: RetryBudget | float | None = None,
                 breaker: CircuitBreaker | None = None, take_over: bool = False):
        if max_in_flight is not None:
            checks.integer(max_in_flight, "max_in_flight", minimum=1)
        pol = get_policy(config.get("queue.policy") if policy is None else policy)
        default_retry = as_retry(retry, None) or Retry.from_config()
        if retry_budget is None or isinstance(retry_budget, (int, float)):
            retry_budget = RetryBudget(ratio=retry_budget)
        elif not isinstance(retry_budget, RetryBudget):
            raise bad_value("retry_budget", retry_budget, "a RetryBudget or a fraction such as 0.2")
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise bad_value("breaker", breaker, "a packlab.queue.CircuitBreaker(threshold=, cooldown=)")
        if not isinstance(take_over, bool):
            raise bad_value("take_over", take_over, "True or False")
        result_max = memory_bytes(config.get("queue.result-max-bytes"), "result-max-bytes")
        factor = int(config.get("queue.in-flight-factor"))
        self._store = Store(config.get("queue.store") if store is None else store)
        self._lease: Lease | None = None
        self._hub = Hub()
        try:  # the lease first: a refused queue makes no client and reads no jobs
            self._lease = self._store.fence = Lease(self._store.path, take_over=take_over)
            client, self._owns_client = _client_of(cluster_or_client)
            self._store.start_writer()
            self._engine = Engine(client, pol, self._store, self._lease, default_retry, retry_budget,
                                  breaker or CircuitBreaker.from_config(), max_in_flight, factor, result_max,
                                  self._hub)
            self._lease.on_lost = self._engine.stop  # run nothing more
            self._store.on_failed = self._engine.fail  # the disk full or read-only: the same
        except BaseException:
            if self._lease is not None:
                self._lease.release()
            self._store.discard()  # a store this constructor created goes again
            raise
        registry.note_queue(cluster_or_client, self._store.path)  # for JupyterLab's sidebar
        self._seq = iter(range(self._store.next_seq(), 1 << 62))
        self._lock = threading.Lock()
        self._keys: weakref.WeakValueDictionary[str, Job] = weakref.WeakValueDictionary()  # as jobs
        self._closed = False
        self._attachments = hooks.queue_opened(self, cluster_or_client)  # telemetry's recorder; never raises
        # Dask spans only where they are read
        self._engine.spans = any(getattr(a, "wants_spans", False) for a in self._attachments)

    # -- submitting ----------------------------------------------------------------------
    @property
    def client(self) -> Client:
        return self._engine.client

    @property
    def policy(self) -> Policy:
        return self._engine.policy

    @property
    def store(self) -> str:
        """The path of the SQLite store."""
        return self._store.path

    def submit(self, fn, *args, priority: str = "normal", owner: str | None = None, deadline: Any = None,
               retry: Retry | int | bool | None = None, timeout: Any = None, key: str | None = None,
               resources: dict[str, float] | None = None, tags: dict[str, str] | None = None,
               **kwargs) -> Job:
        """Queue ``fn(*args, **kwargs)`` and return its :class:`Job` at once.

        Parameters
        ----------
        priority : {"high", "normal", "low"}
            The class for the ``priority`` policy (and the order within an owner).
        owner : str, optional
            Who the job is for: the ``fair-share`` policy shares running time by owner.
        deadline : datetime, timedelta or duration ("10m"), optional
            When the job must be done (``deadline`` policy: earliest first). A job that
            misses it is flagged ``late`` with a ``deadline-missed`` event, never dropped.
        retry : Retry, int or False, optional
            Overrides the queue's retry for this job.
        timeout : float or str, optional
            Seconds (or "5m") after which the attempt fails as a timeout (see module docs).
        key : str, optional
            Idempotency key: submitting an existing key returns the existing job.
        resources : dict, optional
            Dask worker resources, e.g. ``{"GPU": 1}``.
        tags : dict of str to str, optional
            What the job belongs to, stored with it (``Job.tags``), e.g. ``{"pipeline": "etl",
            "stage": "clean"}`` for a pipeline's jobs: telemetry groups jobs by their tags.

        Examples
        --------
        >>> import packlab, tempfile, os
        >>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
        ...     with packlab.JobQueue(pc, store=os.path.join(tempfile.mkdtemp(), "q.db")) as q:
        ...         job = q.submit(pow, 2, 10, key="pow-2-10")
        ...         job.result(timeout=60), q.submit(pow, 2, 10, key="pow-2-10") is job
        (1024, True)
        """
        self._check_open()
        if not callable(fn):
            raise bad_value("fn", fn, "a function (callable) to run")
        rank = priority_rank(priority)
        t = timeout_seconds(timeout)
        d = deadline_epoch(deadline)
        r = as_retry(retry, self._engine.retry) if retry is not None else None
        if owner is not None and not isinstance(owner, str):
            raise bad_value("owner", owner, "a string naming who the job is for")
        if key is not None and not isinstance(key, str):
            raise bad_value("key", key, "a string (an idempotency key)")
        if resources is not None and (not isinstance(resources, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and v > 0 for k, v in resources.items())):
            raise bad_value("resources", resources, 'a dict of positive amounts such as {"GPU": 1}')
        tags = check_tags(tags)
        self._check_healthy()
        with self._lock:
            if key is not None:
                existing = self._existing(key)
                if existing is not None:
                    return existing
            blob = _payload.dumps(fn, args, kwargs)
            job = Job(uuid.uuid4().hex[:12], next(self._seq), _payload.fn_name(fn), blob, owner=owner,
                      rank=rank, deadline=d, timeout=t, key=key, resources=resources, retry=r,
                      cv=self._engine.signal, tags=tags)
            self._engine.jobs.add(job)
            if key is not None:
                self._keys[key] = job
            self._engine.event(job, Kind.SUBMITTED, f"owner={owner} priority={priority}", job.submitted)
            # Dispatch only after the record committed: a job never runs unrecorded.
            self._store.insert(job, then=lambda: self._engine.push(job),
                               failed=lambda err: self._rejected(job, err))
        return job

    def _rejected(self, job: Job, err: BaseException) -> None:
        # Runs on the store's writer thread: no self._lock (submit may hold it in flush()).
        if job.key is not None and self._keys.get(job.key) is job:
            self._keys.pop(job.key, None)
        self._engine.rejected(job, err)

    def _existing(self, key: str) -> Job | None:
        job = self._keys.get(key)
        if job is None:
            jid = self._store.find_key(key)
            if jid is not None:
                job = self.get(jid)
                self._keys[key] = job
                if not job.done() and job._cv is None:  # a crashed run's job nothing runs
                    self._take_over(job)
        return job

    def map(self, fn, iterable: Iterable, *, keys: Iterable[str] | None = None, **submit_kwargs) -> list[Job]:
        """Submit ``fn(item)`` for each item; ``keys`` gives each its idempotency key.
        Returns once every job is committed to the store.

        Examples
        --------
        >>> import packlab, tempfile, os
        >>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
        ...     with packlab.JobQueue(pc, store=os.path.join(tempfile.mkdtemp(), "q.db")) as q:
        ...         [j.result(timeout=60) for j in q.map(str, [1, 2], owner="ann")]
        ['1', '2']
        """
        items = list(iterable)
        ks = [None] * len(items) if keys is None else list(keys)
        if len(ks) != len(items):
            raise PacklabError(f"keys has {len(ks)} entries for {len(items)} items: give one key per item.")
        jobs = [self.submit(fn, x, key=k, **submit_kwargs) for x, k in zip(items, ks, strict=True)]
        self.flush()
        return jobs

    def flush(self) -> None:
        """Block until every job submitted so far is committed to the store (``submit``
        returns before its record commits, within milliseconds; ``map`` flushes).

        Raises a PacklabError naming the records the store refused since the last
        ``flush`` (e.g. a key another process wrote first: those jobs end ``failed``).
        """
        self._store.flush()

    # -- acting on jobs ------------------------------------------------------------------
    def requeue(self, job_id: str) -> Job:
        """Give a dead, failed or cancelled job another full set of attempts."""
        self._check_open()
        job = self.get(job_id)
        check_requeueable(job.id, job.status)  # early, clear; the loop checks again
        return self._engine.ask(core.Requeue(job))

    def cancel(self, job_id: str) -> bool:
        """Cancel a job; ``False`` if it was already final. A running job's thread runs
        on until it returns (Dask cannot stop it); its result is ignored."""
        self._check_open()
        job = self.get(job_id)
        if job.status in TERMINAL:
            return False
        return self._engine.ask(core.Cancel(job))

    def resume(self) -> JobQueue:
        """Run again every job of the store that had not finished (queued, retrying, or
        running when the last driver died), and requeued ones, including those already
        looked up with ``get``. Returns the queue.

        Examples
        --------
        >>> import packlab, tempfile, os
        >>> store = os.path.join(tempfile.mkdtemp(), "q.db")
        >>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
        ...     with packlab.JobQueue(pc, store=store).resume() as q:
        ...         q.jobs()
        []
        """
        self._check_open()
        e = self._engine
        self._store.flush(check=False)  # refused rows are reported by q.flush()
        with self._lock:
            for job in self._store.unfinished():
                mine = e.jobs.get(job.id)
                if mine is not None and mine._cv is not None:
                    continue  # submitted or taken over already: the loop has it
                self._take_over(e.jobs.setdefault(job.id, job))
        return self

    def _take_over(self, job: Job) -> None:
        """Hand an unfinished job of an earlier run to the loop (which marks it ours)."""
        self._engine.jobs.add(job)
        if job.key is not None:
            self._keys[job.key] = job
        job._cv = self._engine.signal  # set here too: result() waits from now on
        self._engine.resume(job)

    # -- lifecycle -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._lease.lost:
            raise self._lease.lost_error()
        if self._closed:
            raise QueueClosed("this JobQueue is closed: open a new one (with the same store to continue).")

    def check(self) -> None:
        """Raise what stopped this queue, if anything did: a
        :class:`~packlab.errors.LeaseError` (another driver took the store over), a
        :class:`~packlab.errors.StoreError` (its store refused a write: the disk full or
        read-only; the message says what to do) or a :class:`~packlab.errors.QueueFailed`
        (its own loop failed). What ``submit`` and ``wait`` raise; a pipeline checks it as
        it waits for its stages.

        Examples
        --------
        >>> import packlab, tempfile, os
        >>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
        ...     with packlab.JobQueue(pc, store=os.path.join(tempfile.mkdtemp(), "q.db")) as q:
        ...         q.check()  # healthy: returns None
        """
        self._check_healthy()

    def _check_healthy(self) -> None:
        if self._lease.lost:
            raise self._lease.lost_error()
        err = self._store.error
        if err is not None:
            raise err  # a StoreError saying what failed and what to do (see failures.py)
        if self._engine.signal.error is not None:
            raise QueueFailed(f"the queue's loop failed ({self._engine.signal.error}); see the "
                               "'packlab.queue' log for the traceback. Open a new JobQueue with the same "
                               "store and resume() to continue.")

    def close(self) -> None:
        """Stop admitting, cancel in-flight futures and commit the store. Jobs not yet
        finished stay recorded as they are; ``resume()`` in a new queue runs them."""
        if self._closed:
            return
        self._closed = True
        self._engine.stop()
        self._engine.thread.join(timeout=60)
        self._hub.close()
        for a in self._attachments:
            a.close()
        self._store.close()
        self._lease.release()
        if self._owns_client:
            self._engine.client.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<JobQueue policy={self._engine.policy.name} store={self._store.path} "
                f"jobs={len(self._engine.jobs)} in_flight={len(self._engine.running)}>")
