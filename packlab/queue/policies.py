"""Scheduling policies: which queued job runs next. One small class each, by name.

A policy sees only the queued jobs and (for fair share) what ran; it never talks to
Dask. Every ``push``/``pop``/``remove`` is O(1) or O(log n): removal is lazy (a heap
entry carries a token; it is live only while the job's ``_pq`` equals it).

A job needs the attributes ``seq`` (submission order), ``rank`` (0 high, 1 normal,
2 low), ``submitted`` (epoch s), ``owner``, ``deadline`` (epoch s or ``None``) and a
writable ``_pq`` (and ``_charge`` for fair share); :class:`packlab.queue.Job` has them.
"""

from __future__ import annotations

import abc
import heapq
import itertools
import math
from collections import deque
from typing import Any, ClassVar

from .. import config
from ..errors import PacklabError, bad_value
from ..plugins import Registry
from ..units import seconds

#: The queue policies, by name: the built-in ones register in code (``@register_policy``),
#: others also through the entry-point group ``packlab.policies``.
POLICIES: Registry[type[Policy]] = Registry(
    "policy", "packlab.policies", fix="Or pass a Policy instance, e.g. FairShare(weights={...}).")
_tokens = itertools.count(1)


def register_policy(cls: type[Policy]) -> type[Policy]:
    """Class decorator: make a policy available as ``JobQueue(policy=cls.name)``."""
    POLICIES.register(cls.name, cls)
    return cls


def get_policy(policy: str | Policy) -> Policy:
    """A policy instance from a name (``"fifo"``, ``"priority"``, ``"fair-share"``,
    ``"deadline"``) or an instance, which is returned as is.

    Examples
    --------
    >>> get_policy("fifo").name
    'fifo'
    """
    if isinstance(policy, Policy):
        return policy
    return POLICIES.get(policy, "policy")()


class Policy(abc.ABC):
    """The interface: ``push``, ``pop``, ``remove``, ``len``; optional usage hooks."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def push(self, job: Any) -> None:
        """Queue ``job`` (again, after a retry or a requeue)."""
        job._pq = next(_tokens)
        self._n += 1
        self._push(job, job._pq)

    def pop(self, now: float = 0.0) -> Any | None:
        """Take the job that should run next, or ``None`` when empty."""
        while self._n:
            job = self._pop_entry(now)
            if job is not None:
                job._pq = 0
                self._n -= 1
                return job
        return None

    def remove(self, job: Any) -> bool:
        """Drop a queued job (cancel); ``False`` if it was not queued here."""
        if not job._pq:
            return False
        job._pq = 0
        self._n -= 1
        return True

    def finished(self, job: Any, runtime: float, now: float) -> None:  # noqa: B027 - optional hook
        """An attempt of ``job`` popped earlier ended after ``runtime`` seconds
        (``runtime=0``: it never ran, e.g. it was held back)."""

    def stats(self) -> dict[str, Any]:
        return {"policy": self.name, "queued": self._n}

    @abc.abstractmethod
    def _push(self, job: Any, token: int) -> None: ...

    @abc.abstractmethod
    def _pop_entry(self, now: float) -> Any | None:
        """Pop one entry; return its job if live, else ``None`` (a stale entry)."""


@register_policy
class FIFO(Policy):
    """First in, first out (retries go to the back).

    Examples
    --------
    >>> from types import SimpleNamespace as J
    >>> p = FIFO(); a, b = J(_pq=0), J(_pq=0)
    >>> p.push(a); p.push(b); p.pop() is a
    True
    """

    name = "fifo"

    def __init__(self) -> None:
        super().__init__()
        self._q: deque = deque()

    def _push(self, job, token):
        self._q.append((token, job))

    def _pop_entry(self, now):
        token, job = self._q.popleft()
        return job if job._pq == token else None


@register_policy
class Priority(Policy):
    """Classes ``high``/``normal``/``low``, FIFO within a class, with aging.

    A job of rank r submitted at t sorts as if submitted at ``t + r * aging``: a low
    job waits at most ``2 * aging`` behind a stream of newer high ones, never forever.

    Examples
    --------
    >>> from types import SimpleNamespace as J
    >>> p = Priority(aging=60)
    >>> lo = J(_pq=0, rank=2, submitted=0.0, seq=0); hi = J(_pq=0, rank=0, submitted=1.0, seq=1)
    >>> p.push(lo); p.push(hi); p.pop() is hi
    True
    """

    name = "priority"

    def __init__(self, aging: float | str | None = None) -> None:
        super().__init__()
        self.aging = seconds(config.get("queue.aging") if aging is None else aging, "aging")
        self._heap: list = []

    def _push(self, job, token):
        heapq.heappush(self._heap, (job.submitted + job.rank * self.aging, job.rank, job.submitted,
                                    job.seq, token, job))

    def _pop_entry(self, now):
        *_, token, job = heapq.heappop(self._heap)
        return job if job._pq == token else None


@register_policy
class Deadline(Policy):
    """Earliest deadline first; jobs without a deadline after all that have one
    (by priority class, then FIFO). Flagging late jobs is the queue's part.

    Examples
    --------
    >>> from types import SimpleNamespace as J
    >>> p = Deadline()
    >>> a = J(_pq=0, deadline=50.0, rank=1, seq=0); b = J(_pq=0, deadline=10.0, rank=1, seq=1)
    >>> p.push(a); p.push(b); p.pop() is b
    True
    """

    name = "deadline"

    def __init__(self) -> None:
        super().__init__()
        self._heap: list = []

    def _push(self, job, token):
        d = math.inf if job.deadline is None else job.deadline
        heapq.heappush(self._heap, (d, job.rank, job.seq, token, job))

    def _pop_entry(self, now):
        *_, token, job = heapq.heappop(self._heap)
        return job if job._pq == token else None


class _Owner:
    __slots__ = ("est", "heap", "in_heap", "name", "order", "running", "usage", "version", "weight")

    def __init__(self, name, weight, est, order):
        self.name, self.weight, self.est, self.order = name, weight, est, order
        self.heap: list = []
        self.usage = 0.0  # decayed seconds, stored scaled by exp(rate * (t - t0))
        self.version = 0
        self.in_heap = False
        self.running = 0


@register_policy
class FairShare(Policy):
    """Fair share between owners, after Slurm's fair-share factor.

    The next job comes from the owner whose decayed usage divided by its weight is
    lowest (Slurm's factor ``2**(-usage/share)`` is highest there). Usage is running
    time in seconds with a half-life; a job is charged its owner's average runtime
    when it starts, corrected to its real runtime when it ends (the queue reports the
    time its worker spent in the call, not its wait in Dask), so jobs in flight count
    too. Over time each owner's share of running time converges to its weight, and a
    heavy submitter cannot crowd out a light one. Within an owner: priority, then FIFO.

    Decay multiplies every owner's usage by the same factor, so it never reorders
    them: usage is stored scaled by ``exp(rate*t)`` and each decision is O(log n).

    Examples
    --------
    >>> from types import SimpleNamespace as J
    >>> p = FairShare()
    >>> jobs = [J(_pq=0, rank=1, seq=i, owner=o, _charge=0.0) for i, o in enumerate("aaab")]
    >>> for j in jobs: p.push(j)
    >>> [p.pop(now=0).owner for _ in range(4)]
    ['a', 'b', 'a', 'a']
    """

    name = "fair-share"

    def __init__(self, weights: dict[str, float] | None = None, half_life: float | str | None = None,
                 default_weight: float = 1.0) -> None:
        super().__init__()
        if weights is not None and not isinstance(weights, dict):
            raise bad_value("weights", weights, 'a dict of owner to a positive weight, e.g. {"alice": 2}')
        for owner, w in (weights or {}).items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not w > 0 or w == math.inf:
                raise PacklabError(f"weights[{owner!r}]={w!r} is invalid: expected a positive number, e.g. "
                                   f"weights={{{owner!r}: 2}}.", field="weights", value=w)
        self.weights = dict(weights or {})
        if isinstance(default_weight, bool) or not isinstance(default_weight, (int, float)) or \
                not 0 < default_weight < math.inf:
            raise bad_value("default_weight", default_weight, "a positive number such as 1.0")
        self.default_weight = float(default_weight)
        hl = seconds(config.get("queue.fair-share-half-life") if half_life is None else half_life,
                     "half_life", allow_zero=False)
        self._rate = math.log(2) / hl
        self._t0: float | None = None
        self._scale_at, self._scale_value = math.nan, 1.0
        self._owners: dict[Any, _Owner] = {}
        self._heap: list = []  # (usage/weight, owner order, version, owner name)
        self._mean = 1.0  # runtime estimate before anything finished

    def _scale(self, now: float) -> float:
        if now == self._scale_at:
            return self._scale_value
        if self._t0 is None:
            self._t0 = now
        x = self._rate * (now - self._t0)
        if x > 300:  # rebase before exp() overflows; order is unchanged
            f = math.exp(-x)
            for o in self._owners.values():
                o.usage *= f
                self._reheap(o)
            self._t0, x = now, 0.0
        self._scale_at, self._scale_value = now, math.exp(x)
        return self._scale_value

    def _reheap(self, o: _Owner) -> None:
        o.version += 1
        if o.heap:
            o.in_heap = True
            heapq.heappush(self._heap, (o.usage / o.weight, o.order, o.version, o.name))
        else:
            o.in_heap = False

    def _owner(self, name) -> _Owner:
        o = self._owners.get(name)
        if o is None:
            o = self._owners[name] = _Owner(name, self.weights.get(name, self.default_weight), self._mean,
                                                len(self._owners))
        return o

    def _push(self, job, token):
        o = self._owner(job.owner)
        heapq.heappush(o.heap, (job.rank, job.seq, token, job))
        if not o.in_heap:
            self._reheap(o)

    def _pop_entry(self, now):
        scale = self._scale(now)  # first: a rebase re-pushes every owner
        heap = self._heap
        while heap:
            key, order, version, name = heap[0]
            o = self._owners[name]
            if version != o.version:
                heapq.heappop(heap)
                continue
            cur = o.usage / o.weight
            if cur > key:  # usage grew since this entry was made (see finished): re-sift
                heapq.heapreplace(heap, (cur, order, version, name))
                continue
            *_, token, job = heapq.heappop(o.heap)
            if job._pq != token:
                if not o.heap:
                    heapq.heappop(heap)
                    o.in_heap = False
                    o.version += 1
                return None
            job._charge = o.est
            o.usage += o.est * scale
            o.running += 1
            o.version += 1
            if o.heap:  # replace this owner's entry: one sift instead of pop + push
                heapq.heapreplace(heap, (o.usage / o.weight, order, o.version, name))
            else:
                heapq.heappop(heap)
                o.in_heap = False
            return job
        raise IndexError("pop from an empty fair-share policy")  # _n out of sync: a bug

    def finished(self, job, runtime, now):
        o = self._owner(job.owner)
        o.running = max(0, o.running - 1)
        delta = runtime - job._charge
        o.usage = max(0.0, o.usage + delta * self._scale(now))
        job._charge = 0.0
        if runtime > 0:
            o.est = 0.8 * o.est + 0.2 * runtime
            self._mean = 0.9 * self._mean + 0.1 * runtime
        # A key that grew is fixed lazily when its entry reaches the top (pop re-sifts
        # it); one that shrank must move up now, or this owner would wait too long.
        if delta < 0 and o.in_heap:
            self._reheap(o)

    def usage(self, now: float) -> dict[Any, float]:
        """Each owner's decayed usage in seconds at ``now``."""
        if self._t0 is None:
            return {}
        f = math.exp(-self._rate * (now - self._t0))
        return {name: o.usage * f for name, o in self._owners.items()}

    def stats(self) -> dict[str, Any]:
        s = super().stats()
        s["owners"] = {str(n): {"weight": o.weight, "running": o.running} for n, o in self._owners.items()}
        return s
