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

import functools
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Sequence

from .job import Job
from .states import TERMINAL


def _locked(method):
    @functools.wraps(method)
    def call(self, *args):
        with self._lock:
            return method(self, *args)

    return call


class JobIndex:
    """This session's jobs by id (see the module docstring); thread-safe: the engine's
    thread notes changes while users' threads submit, list and look up."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._live: dict[str, Job] = {}
        self._held: weakref.WeakValueDictionary[str, Job] = weakref.WeakValueDictionary()
        self._ended: dict[str, str] = {}  # id -> final status, for every finished job
        self._ended_counts: Counter = Counter()

    @_locked
    def __len__(self) -> int:
        return len(self._live) + len(self._ended)

    @_locked
    def __contains__(self, job_id: str) -> bool:
        return job_id in self._live or job_id in self._ended

    @_locked
    def get(self, job_id: str, default: Job | None = None) -> Job | None:
        """The job in memory, else ``default`` (a finished job nobody holds: read it from
        the store)."""
        job = self._live.get(job_id)
        if job is None:
            job = self._held.get(job_id)
        return default if job is None else job

    @_locked
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

    @_locked
    def setdefault(self, job_id: str, job: Job) -> Job:
        """The job in memory with this id, else ``job`` (added)."""
        mine = self.get(job_id)
        if mine is not None:
            return mine
        self.add(job)
        return job

    @_locked
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

    @_locked
    def live(self) -> list[Job]:
        """The unfinished jobs."""
        return list(self._live.values())

    @_locked
    def in_memory(self) -> list[Job]:
        """Every job in memory: the unfinished ones and the finished ones still held."""
        return [*self._live.values(), *self._held.values()]

    @_locked
    def ended_ids(self) -> list[str]:
        """The ids of the finished jobs nobody holds (the store has them)."""
        return [i for i in self._ended if i not in self._held]

    @_locked
    def counts(self) -> Counter:
        """Jobs per status, exact."""
        out = Counter(j.status for j in list(self._live.values()))
        out.update({k: v for k, v in self._ended_counts.items() if v})
        return out


class Later(Sequence):
    """A list of jobs read only when first used: ``q.wait()`` returns every job of the
    session, which for freed finished jobs means reading them from the store, and most
    callers only wait.

    Examples
    --------
    >>> later = Later(lambda: [1, 2, 3])
    >>> len(later), later[-1], list(later) == [1, 2, 3], later == [1, 2, 3]
    (3, 3, True, True)
    """

    def __init__(self, load: Callable[[], list]) -> None:
        self._load, self._items = load, None

    def _all(self) -> list:
        if self._items is None:
            self._items = self._load()
        return self._items

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, i):
        return self._all()[i]

    def __eq__(self, other: object) -> bool:
        return list(self._all()) == list(other) if isinstance(other, Sequence) else NotImplemented

    def __repr__(self) -> str:
        return repr(self._all())


__all__ = ["JobIndex", "Later"]
