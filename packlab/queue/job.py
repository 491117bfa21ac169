"""A job of the queue: one function call, its status, its attempts and its history.

A :class:`Job` is a small record (``__slots__``: a million queued jobs fit in well
under 2 KB each beyond their payload). The thread that creates (or loads) a job fills
it in; once it is handed to the queue's admission loop, that loop is its only writer.
Users read it and block on :meth:`Job.result`.
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
import time
from concurrent.futures import CancelledError
from typing import Any

from ..errors import PacklabError, QueueClosed, bad_value
from ..units import seconds
from .states import (
    CANCELLED,
    DEAD,
    DONE,
    FAILED,
    PRIORITIES,
    QUEUED,
    REQUEUEABLE,
    TERMINAL,
)

_NAMES = {v: k for k, v in PRIORITIES.items()}


class JobTimeout(TimeoutError):
    """A job ran past its ``timeout``. Transient: retried by the job's :class:`Retry`."""


def check_requeueable(job_id: str, status: str) -> None:
    """The one rule for ``requeue`` (queue, store and CLI): only a job that ended
    without success gets another set of attempts.

    Examples
    --------
    >>> check_requeueable("a1", "dead")
    >>> check_requeueable("a1", "running")
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: job a1 is running: only dead, failed or cancelled jobs can be requeued.
    """
    if status not in REQUEUEABLE:
        raise PacklabError(f"job {job_id} is {status}: only dead, failed or cancelled jobs can be requeued.",
                           field="job_id", value=job_id)


def check_cancellable(job_id: str, status: str) -> None:
    """Only an unfinished job can be cancelled (the CLI; ``JobQueue.cancel`` returns False)."""
    if status in TERMINAL:
        raise PacklabError(f"job {job_id} is {status}, already final: only queued, running or retrying "
                           "jobs can be cancelled.", field="job_id", value=job_id)


class Signal:
    """What users block on: a condition the admission loop notifies after each turn,
    whether the queue closed (a closed queue finishes nothing more), and the first error
    the loop or the store hit (raised to waiters instead of letting them hang).

    Examples
    --------
    >>> s = Signal()
    >>> s.closed, s.error, s.failure
    (False, None, None)
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.closed = False
        self.error: str | None = None
        #: What stopped the queue when it did not close of its own accord (its store
        #: failed: a StoreError); raised to whoever waits on one of its jobs.
        self.failure: BaseException | None = None

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()


class JobFailed(RuntimeError):
    """A job ended ``failed`` or ``dead`` and its original exception is not available
    (e.g. it was loaded from the store); the message carries the error and traceback."""


class Job:
    """One function call in a :class:`packlab.JobQueue`.

    Attributes
    ----------
    id : str
        Unique id (also the one ``packlab queue`` commands take).
    status : str
        ``queued``, ``running``, ``retrying``, ``done``, ``failed``, ``dead`` or ``cancelled``.
    attempts : int
        Attempts started so far.
    late : bool
        The job missed (or can no longer meet) its deadline.
    next_attempt : float or None
        While ``retrying``: the earliest time (epoch s) of its next attempt, the end of
        its backoff. Stored, so a restarted queue waits it out too.
    events : list of (time, kind, detail)
        Its history: submitted, running, failed, retrying, held, done, ...

    Examples
    --------
    >>> j = Job("a1", 0, "builtins.sum", b"")
    >>> j.status, j.priority, j.attempts
    ('queued', 'normal', 0)
    """

    __slots__ = (  # __weakref__: the queue holds a finished job weakly (see .index)
        "__weakref__", "_charge", "_cv", "_exc", "_future", "_has_result", "_payload", "_pq", "_result",
        "_started", "_token", "attempts", "deadline", "error", "events", "fn_name", "id", "key",
        "late", "next_attempt", "owner", "rank", "resources", "retry", "seq", "status", "submitted",
        "tags", "timeout", "traceback",
    )

    def __init__(self, id: str, seq: int, fn_name: str, payload: bytes | None, *, owner: str | None = None,
                 rank: int = 1, deadline: float | None = None, timeout: float | None = None,
                 key: str | None = None, resources: dict | None = None, retry: Any = None,
                 submitted: float | None = None, cv: Signal | None = None, tags: dict | None = None):
        self.id = id
        #: What the submitter said the job belongs to (``{"pipeline": ..., "stage": ...}`` for a
        #: pipeline's jobs), stored with it so readers group jobs without parsing names.
        self.tags = tags
        self.seq = seq
        self.fn_name = fn_name
        self._payload = payload
        self.owner = owner
        self.rank = rank
        self.deadline = deadline
        self.timeout = timeout
        self.key = key
        self.resources = resources
        self.retry = retry
        self.submitted = time.time() if submitted is None else submitted
        self.status = QUEUED
        self.attempts = 0
        self.late = False
        self.next_attempt: float | None = None
        self.error: str | None = None
        self.traceback: str | None = None
        self.events: list[tuple[float, str, str]] = []
        self._cv = cv
        self._exc: BaseException | None = None
        self._result: Any = None
        self._has_result = False
        self._future = None
        self._pq = 0  # the policy's live-entry token (0: not in a policy)
        self._token = 0  # bumped per attempt: late callbacks of an old attempt are ignored
        self._charge = 0.0  # fair-share usage charged at dispatch, corrected at the end
        self._started = 0.0  # when the attempt was handed to Dask (driver clock)

    @property
    def priority(self) -> str:
        """The priority class: ``high``, ``normal`` or ``low``."""
        return _NAMES[self.rank]

    def done(self) -> bool:
        """True once the job reached a final status (done, failed, dead, cancelled), as
        ``concurrent.futures.Future.done()``."""
        return self.status in TERMINAL

    def _wait(self, timeout: float | str | None) -> None:
        timeout = wait_seconds(timeout)
        if self.status in TERMINAL:
            return
        if self._cv is None:
            raise PacklabError(
                f"job {self.id} is {self.status} and no queue runs it (it was loaded from the "
                "store): call resume() on a packlab.JobQueue(cluster, store=...) to run it."
            )
        end = None if timeout is None else time.monotonic() + timeout
        sig = self._cv
        with sig.cond:
            while self.status not in TERMINAL:
                if sig.closed and sig.failure is not None:
                    raise sig.failure
                if sig.closed:
                    raise QueueClosed(
                        f"job {self.id} is {self.status} and its queue is closed: open "
                        "packlab.JobQueue(cluster, store=same).resume() to run it."
                    )
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"job {self.id} is still {self.status} after {timeout} s")
                sig.cond.wait(left if left is not None else 1.0)

    def result(self, timeout: float | str | None = None) -> Any:
        """Block until the job is final and return its result, or raise its error.

        Raises the job's own exception for ``failed``/``dead`` jobs (a :class:`JobFailed`
        carrying the traceback text when the job was loaded from the store),
        ``concurrent.futures.CancelledError`` for cancelled ones and ``TimeoutError``
        when ``timeout`` (seconds, or a duration such as ``"5m"``) passes first.
        """
        self._wait(timeout)
        if self.status == DONE:
            if not self._has_result:
                raise PacklabError(
                    f"job {self.id} is done but its result was not kept: results larger than "
                    "packlab.queue.result-max-bytes are not stored; raise that limit or return "
                    "a path to where the job saved its output."
                )
            return self._result
        if self.status == CANCELLED:
            raise CancelledError(f"job {self.id} was cancelled")
        raise self.exception(timeout=0)

    def exception(self, timeout: float | str | None = None) -> BaseException | None:
        """Block until final; the exception of a failed/dead job, else ``None``."""
        self._wait(timeout)
        if self.status not in (FAILED, DEAD):
            return None
        if self._exc is not None:
            return self._exc
        return JobFailed(f"job {self.id} ({self.fn_name}) is {self.status}: {self.error}\n"
                         f"{self.traceback or ''}")

    def history(self) -> str:
        """The event history as text, one event a line.

        Examples
        --------
        >>> j = Job("a1", 0, "f", b"")
        >>> j.events.append((0.0, "submitted", "owner=None"))
        >>> "submitted" in j.history()
        True
        """
        t0 = self.events[0][0] if self.events else 0.0
        return "\n".join(f"+{t - t0:8.3f}s  {kind:<16} {detail}" for t, kind, detail in self.events)

    def __repr__(self) -> str:
        late = " late" if self.late else ""
        return (f"<Job {self.id} {self.fn_name} {self.status}{late} attempts={self.attempts} "
                f"owner={self.owner} priority={self.priority}>")


# -- input checks -----------------------------------------------------------------------

def priority_rank(priority: str) -> int:
    """The rank of a priority class name, or a clear error.

    Examples
    --------
    >>> priority_rank("high")
    0
    """
    if priority not in PRIORITIES:
        raise bad_value("priority", priority, f"one of {list(PRIORITIES)}")
    return PRIORITIES[priority]


def wait_seconds(timeout: Any, field: str = "timeout") -> float | None:
    """``None`` (wait forever) or a duration of 0 or more (``30``, ``"5m"``) in seconds:
    how long ``result``/``wait`` block.

    Examples
    --------
    >>> wait_seconds("1m"), wait_seconds(None)
    (60.0, None)
    """
    if timeout is None:
        return None
    s = seconds(timeout, field)
    if s != s or s == float("inf"):
        raise bad_value(field, timeout, "a finite duration such as 30 or '5m'", "Pass None to wait forever.")
    return s


def timeout_seconds(timeout: Any) -> float | None:
    """``None`` or a positive duration (``30``, ``"5m"``) in seconds.

    Examples
    --------
    >>> timeout_seconds("2m")
    120.0
    """
    if timeout is None:
        return None
    s = seconds(timeout, "timeout", allow_zero=False)
    if s == float("inf") or s != s:
        raise bad_value("timeout", timeout, 'a finite duration such as 30 or "5m"',
                        "Pass None for no timeout.")
    return s


def deadline_epoch(deadline: Any, now: float | None = None) -> float | None:
    """A deadline as epoch seconds: a ``datetime`` is absolute; a ``timedelta``, a
    number of seconds or a duration string (``"10m"``) counts from now.

    Examples
    --------
    >>> deadline_epoch("10s", now=100.0)
    110.0
    """
    if deadline is None:
        return None
    now = time.time() if now is None else now
    if isinstance(deadline, _dt.datetime):
        t = deadline.timestamp()
    elif isinstance(deadline, _dt.timedelta):
        t = now + deadline.total_seconds()
    elif isinstance(deadline, (int, float, str)) and not isinstance(deadline, bool):
        if isinstance(deadline, (int, float)) and deadline < 0:
            raise bad_value("deadline", deadline, "a time in the future",
                            "Give a datetime, or a delay from now such as '10m'.")
        t = now + seconds(deadline, "deadline")
    else:
        raise bad_value("deadline", deadline, "a datetime, a timedelta or a delay such as '10m'")
    if t <= now:
        raise bad_value("deadline", deadline, "a time in the future",
                        f"It is {t - now:.1f} s from now; give a later datetime or a delay such as '10m'.")
    return t

def check_tags(tags: object) -> dict[str, str] | None:
    """``tags`` if it is ``None`` or a mapping of short strings to strings, else a clear error.

    Examples
    --------
    >>> check_tags({"pipeline": "etl", "stage": "clean"})
    {'pipeline': 'etl', 'stage': 'clean'}
    >>> check_tags({"stage": 3})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: tags={'stage': 3} is invalid: expected a dict of strings to strings...
    """
    if tags is None:
        return None
    if not isinstance(tags, dict) or not all(isinstance(k, str) and k and isinstance(v, str)
                                             for k, v in tags.items()):
        raise bad_value("tags", tags, 'a dict of strings to strings, e.g. {"pipeline": "etl", "stage": "a"}')
    return dict(tags)


def encode_tags(tags: dict[str, str] | None) -> str | None:
    """How tags are stored: canonical JSON (sorted keys), so equal tags group together in SQL."""
    return None if not tags else json.dumps(tags, sort_keys=True, separators=(",", ":"))
