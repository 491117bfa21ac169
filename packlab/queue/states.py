"""One place for each fact of the queue: the job statuses, the event kinds and the
priority classes. A new status or event kind is added here, and only here.

Examples
--------
>>> Kind.DONE, DONE in TERMINAL, len(KINDS)
('done', True, 16)
>>> Kind.DEAD in FAILED_KINDS, Kind.HELD in WAITING_KINDS
(True, True)
"""

from __future__ import annotations

QUEUED, RUNNING, RETRYING = "queued", "running", "retrying"
DONE, FAILED, DEAD, CANCELLED = "done", "failed", "dead", "cancelled"
#: Every job status, in the order ``packlab queue stats`` shows them.
STATUSES = (QUEUED, RUNNING, RETRYING, DONE, FAILED, DEAD, CANCELLED)
#: Final statuses: nothing runs a job in one of them again (unless it is requeued).
TERMINAL = frozenset({DONE, FAILED, DEAD, CANCELLED})
#: What a restarted queue runs again.
UNFINISHED = (QUEUED, RUNNING, RETRYING)
#: What ``requeue`` accepts: a job that ended without success.
REQUEUEABLE = (DEAD, FAILED, CANCELLED)

#: Priority classes, best first. The rank is what policies sort on.
PRIORITIES = {"high": 0, "normal": 1, "low": 2}


class Kind:
    """The kinds of job events (``Job.events``, the store's ``events`` table, and what
    :meth:`packlab.JobQueue.subscribe` delivers)."""

    SUBMITTED = "submitted"
    REJECTED = "rejected"  # the store refused the record (its key exists): it never runs
    RESUMED = "resumed"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # one attempt failed
    RETRYING = "retrying"
    RETRY_DEFERRED = "retry-deferred"
    FAILED_FINAL = "failed-final"  # not retried: the job ends failed
    DEAD = "dead"  # the dead-letter queue
    HELD = "held"  # by an open circuit breaker
    RELEASED = "released"
    PROBE = "probe"
    DEADLINE_MISSED = "deadline-missed"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"


#: Every event kind.
KINDS = tuple(v for k, v in vars(Kind).items() if k.isupper())

#: After these kinds a job waits in the queue (or for its backoff, or behind a breaker).
WAITING_KINDS = frozenset({Kind.SUBMITTED, Kind.RESUMED, Kind.REQUEUED, Kind.RETRYING, Kind.RETRY_DEFERRED,
                           Kind.HELD, Kind.RELEASED})
#: After these it does not: handed to Dask, or over.
NOT_WAITING_KINDS = frozenset({Kind.RUNNING, Kind.DONE, Kind.FAILED, Kind.FAILED_FINAL, Kind.DEAD,
                               Kind.CANCELLED, Kind.REJECTED})
#: The kinds that end a job (a later ``requeued`` may start it again), in a stable order.
ENDED_KINDS = (Kind.DONE, Kind.FAILED_FINAL, Kind.DEAD, Kind.CANCELLED)
#: The ends that are failures.
FAILED_KINDS = (Kind.FAILED_FINAL, Kind.DEAD)

#: Seconds between two reads of requests from other processes (``packlab queue cancel``).
POLL = 0.25
