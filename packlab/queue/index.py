"""This session's jobs, in bounded memory.

An unfinished job is held here (the engine runs it); a finished one only as long as
something else holds it (the :class:`~.job.Job` a user kept from ``submit`` or ``map``),
through a weak reference. A finished job nobody holds is freed, and only its id and final
status stay (about 150 bytes instead of the job's 1-2 KB with its events and result): the
queue reads it back from the store when asked (``q.get``, ``q.jobs()``), so a queue that
runs millions of jobs keeps memory for the unfinished ones. Counts per status stay exact.

Examples
--------
>>> from packlab.queue.job import Job
>>> ix = JobIndex()
>>> a, b = Job("a", 0, "m.f", b""), Job("b", 1, "m.f", b"")
>>> ix.add(a); ix.add(b)
>>> b.status = "done"; ix.note(b)
>>> ix.counts()["done"], len(ix), ix.get("b") is b
(1, 2, True)
>>> del b  # nobody holds it any more: only its id and status stay
>>> ix.get("b") is None, ix.ended_ids(), ix.counts()["done"]
(True, ['b'], 1)
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterator

from .job import Job
from .states import TERMINAL


class JobIndex:
    """This session's jobs by id (see the module docstring). The engine thread and the
    submitting threads use it under the engine's and the queue's own locking: additions come
    before a job is handed to the engine, ``note`` only from the engine's thread."""

    def __init__(self) -> None:
        self._live: dict[str, Job] = {}
        self._held: weakref.WeakValueDictionary[str, Job] = weakref.WeakValueDictionary()
        self._ended: dict[str, str] = {}  # id -> final status, for every finished job
        self._ended_counts: Counter = Counter()

    def __len__(self) -> int:
        return len(self._live) + len(self._ended)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._live or job_id in self._ended

    def get(self, job_id: str, default: Job | None = None) -> Job | None:
        """The job in memory, else ``default`` (a finished job nobody holds: read it from
        the store)."""
        job = self._live.get(job_id)
        if job is None:
            job = self._held.get(job_id)
        return default if job is None else job

    def add(self, job: Job) -> None:
        """A job of this session (submitted, taken over or loaded)."""
        if job.status in TERMINAL:
            self._retire(job)
        else:
            was = self._ended.pop(job.id, None)
            if was is not None:  # a finished job back in play (requeued)
                self._ended_counts[was] -= 1
            self._held.pop(job.id, None)
            self._live[job.id] = job

    def setdefault(self, job_id: str, job: Job) -> Job:
        """The job in memory with this id, else ``job`` (added)."""
        mine = self.get(job_id)
        if mine is not None:
            return mine
        self.add(job)
        return job

    def note(self, job: Job) -> None:
        """The engine changed ``job``: a job that finished is held weakly from now on, one
        that was requeued strongly again."""
        finished = job.status in TERMINAL
        if finished and job.id in self._live:
            del self._live[job.id]
            self._retire(job)
        elif not finished and job.id not in self._live and job.id in self._ended:
            self.add(job)
        elif finished and self._ended.get(job.id) not in (None, job.status):
            self._ended_counts[self._ended[job.id]] -= 1  # e.g. failed, then requeued and dead
            self._ended[job.id] = job.status
            self._ended_counts[job.status] += 1

    def _retire(self, job: Job) -> None:
        self._held[job.id] = job
        was = self._ended.get(job.id)
        if was != job.status:
            if was is not None:
                self._ended_counts[was] -= 1
            self._ended[job.id] = job.status
            self._ended_counts[job.status] += 1

    def live(self) -> list[Job]:
        """The unfinished jobs."""
        return list(self._live.values())

    def in_memory(self) -> Iterator[Job]:
        """Every job in memory: the unfinished ones and the finished ones still held."""
        yield from list(self._live.values())
        yield from list(self._held.values())

    def ended_ids(self) -> list[str]:
        """The ids of the finished jobs nobody holds (the store has them)."""
        return [i for i in self._ended if i not in self._held]

    def counts(self) -> Counter:
        """Jobs per status, exact."""
        out = Counter(j.status for j in list(self._live.values()))
        out.update({k: v for k, v in self._ended_counts.items() if v})
        return out


__all__ = ["JobIndex"]
