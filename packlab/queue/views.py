"""Waiting for and looking at a queue's jobs: a part of :class:`packlab.JobQueue`
(``wait``, ``get``, ``jobs``, ``stats``, ``dead_letters``, ``subscribe``), apart only to
keep each module short."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import PacklabError, QueueClosed, bad_value
from .events import Event, Subscription
from .index import Later
from .job import Job, wait_seconds
from .states import STATUSES, TERMINAL


class Views:
    """The looking half of :class:`packlab.JobQueue` (a mixin over its engine and store)."""

    # -- waiting and looking -------------------------------------------------------------
    def wait(self, jobs: Iterable[Job | str] | None = None, timeout: float | str | None = None
             ) -> Sequence[Job]:
        """Block until the jobs (default: every job of this queue) are final; return them
        (for the default, a sequence read when first used: finished jobs nobody holds come
        back from the store).

        Raises ``TimeoutError`` if ``timeout`` (seconds, or a duration such as ``"5m"``)
        passes first; :class:`~packlab.errors.QueueClosed` if the queue closed,
        :class:`~packlab.errors.LeaseError` or :class:`~packlab.errors.StoreError` if it
        lost its lease or its store failed, and a PacklabError if its loop failed or a
        job is one nothing runs (loaded with ``get`` before ``resume()``).
        """
        timeout = wait_seconds(timeout)
        if jobs is not None and (isinstance(jobs, (str, Job)) or not isinstance(jobs, Iterable)):
            raise bad_value("jobs", jobs, "a list of Jobs or job ids", "Pass [job], or None for every job.")
        todo = self._engine.jobs.live() if jobs is None else [
            j if isinstance(j, Job) else self.get(j) for j in jobs]
        end = None if timeout is None else time.monotonic() + timeout
        sig = self._engine.signal
        i = 0
        with sig.cond:
            while True:
                while i < len(todo) and todo[i].status in TERMINAL:
                    i += 1
                if i == len(todo):
                    return todo if jobs is not None else Later(self.jobs)  # read when used
                # (Each turn costs O(1) amortised: the driver thread waits for this lock to
                # notify, so nothing here may scan every job, except to say why it stops.)
                if sig.closed and not self._lease.lost and self._store.error is None:
                    n = sum(j.status not in TERMINAL for j in todo)
                    raise QueueClosed(f"{n} of {len(todo)} jobs are not finished and the queue is closed: "
                                       "open packlab.JobQueue(cluster, store=same).resume() to run them.")
                if todo[i]._cv is None:
                    raise PacklabError(f"job {todo[i].id} is {todo[i].status} and nothing runs it (it was "
                                       "loaded from the store): call q.resume() first.")
                self._check_healthy()
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    n = sum(j.status not in TERMINAL for j in todo)
                    raise TimeoutError(f"{n} of {len(todo)} jobs are not finished after {timeout} s")
                sig.cond.wait(0.5 if left is None else min(0.5, left))

    def get(self, job_id: str) -> Job:
        """The job with this id (from this session or the store). An unfinished job
        of an earlier run only runs once ``resume()`` is called."""
        if not isinstance(job_id, str) or not job_id:
            raise bad_value("job_id", job_id, "a job id string (Job.id)",
                            "List ids with q.jobs() or `packlab queue ls`.")
        job = self._engine.jobs.get(job_id)
        if job is not None:
            return job
        self._store.flush(check=False)  # refused rows are reported by q.flush()
        found = self._store.load([job_id])
        if not found:
            raise PacklabError(f"job id {job_id!r} does not exist in store {self._store.path}: "
                               "list ids with q.jobs() or `packlab queue ls`.", field="job_id", value=job_id)
        return self._engine.jobs.setdefault(job_id, found[0])

    def jobs(self, status: str | None = None) -> list[Job]:
        """This session's jobs (optionally of one status), in submission order."""
        if status is not None and status not in STATUSES:
            raise bad_value("status", status, f"one of {list(STATUSES)}", "Pass status=None for every job.")
        ix = self._engine.jobs
        mem = list(ix.in_memory())  # held from here on
        have = {j.id for j in mem}
        freed = [i for i in ix.ended_ids() if i not in have]
        if freed:  # finished jobs nobody holds: read back from the store
            self._store.flush(check=False)
            mem += [ix.setdefault(j.id, j) for j in self._store.load(freed, cv=self._engine.signal)]
        js = sorted(mem, key=lambda j: j.seq)
        return js if status is None else [j for j in js if j.status == status]

    def stats(self) -> dict[str, Any]:
        """Counts per status, in-flight, held jobs, circuit breakers and the retry budget.

        Examples
        --------
        >>> import packlab, tempfile, os
        >>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
        ...     with packlab.JobQueue(pc, store=os.path.join(tempfile.mkdtemp(), "q.db")) as q:
        ...         s = q.stats()
        >>> s["policy"], s["in_flight"], s["breakers"], s["retry_budget"]["retries"], s["errors"]["loop"]
        ('fifo', 0, {}, 0, None)

        ``errors`` holds the first error of the queue's loop and of its store (``None``
        when healthy); ``submit`` and ``wait`` raise them.
        """
        e = self._engine
        snap = e.snapshot()
        counts = e.jobs.counts()
        err = self._store.error
        return {
            "policy": snap["policy"],
            "counts": dict(counts),
            "queued": snap["queued"],
            "in_flight": snap["in_flight"],
            "max_in_flight": snap["max_in_flight"],
            "held": snap["held"],
            "breakers": snap["breakers"],
            "retry_budget": snap["retry_budget"],
            "dead_letters": self._store.counts().get("dead", 0),
            "errors": {"loop": e.signal.error,
                       "store": None if err is None else f"{type(err).__name__}: {err}"},
        }

    def dead_letters(self) -> list[Job]:
        """Jobs in the dead-letter queue (from the store: they survive restarts), each
        with its ``error``, ``traceback``, ``attempts``, ``owner`` and ``events``."""
        self._store.flush(check=False)  # refused rows are reported by q.flush()
        return [self._engine.jobs.get(j.id, j) for j in self._store.dead_letters(cv=self._engine.signal)]

    def subscribe(self, callback: Callable[[Event], None], kinds: Iterable[str] | str | None = None
                  ) -> Subscription:
        """Call ``callback(event)`` for each job event (of ``kinds``, default all of
        :data:`packlab.queue.KINDS`); returns a handle: call it to unsubscribe.

        Each :class:`packlab.queue.Event` carries the job's id, owner, priority and
        function, the kind, its time, the detail text and the queue depth. Callbacks run
        on one delivery thread, off the engine's path; one that raises is logged, never
        breaks the queue.

        Examples
        --------
        >>> import packlab, tempfile, os
        >>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
        ...     with packlab.JobQueue(pc, store=os.path.join(tempfile.mkdtemp(), "q.db")) as q:
        ...         seen = []
        ...         stop = q.subscribe(seen.append, kinds=["submitted", "done"])
        ...         _ = q.submit(abs, -1).result(timeout=60)
        >>> [e.kind for e in seen]
        ['submitted', 'done']
        """
        return self._hub.subscribe(callback, kinds)
