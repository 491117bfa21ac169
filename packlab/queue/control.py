"""Acting on one job at a user's request: cancel and requeue.

Both run in the engine's driver thread (``JobQueue`` sends them through ``Engine.call``;
requests from another process arrive through the store), so they see the job as the
loop does: a status checked here cannot change before the action, and two requests for
one job are handled one after the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .job import Job, check_requeueable
from .states import CANCELLED, QUEUED, RUNNING, Kind

if TYPE_CHECKING:
    from .engine import Engine


def cancel(engine: Engine, job: Job, now: float) -> bool:
    """Cancel ``job``; ``False`` if it was already final. A running attempt's future is
    cancelled (its thread runs on until it returns; the result is ignored)."""
    if job.done():
        return False
    if job.status == RUNNING:
        fut = job._future
        engine.end_attempt(job, now)
        if fut is not None:
            try:
                engine.client.cancel([fut])
            except Exception:
                pass
        engine.breakers.abandon(job.fn_name, now)
    else:
        engine.policy.remove(job)
        engine.breakers.forget(job)
    job._token += 1
    job.status = CANCELLED
    engine.event(job, Kind.CANCELLED, "by request", now)
    engine.store.update(job)
    return True


def requeue(engine: Engine, job: Job, now: float) -> Job:
    """Give a dead, failed or cancelled job a fresh set of attempts."""
    check_requeueable(job.id, job.status)  # checked here, in the loop: two callers cannot both pass
    job._token += 1
    job._cv = engine.signal  # a job loaded from the store is this queue's from now on
    was, n = job.status, job.attempts
    job.status, job.attempts, job._exc = QUEUED, 0, None
    engine.event(job, Kind.REQUEUED, f"was {was} after {n} attempts", now)
    engine.store.update(job)
    engine.policy.push(job)
    return job
