"""Acting on one job at a user's request: cancel and requeue.

Both run in the engine's driver thread (``JobQueue`` sends them through ``Engine.call``;
requests from another process arrive through the store), so they see the job as the
loop does: a status checked here cannot change before the action, and two requests for
one job are handled one after the other. They use the engine's narrow API only:
``withdraw``, ``enqueue``, ``record``, ``event``, ``lookup``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import PacklabError
from .job import Job, check_requeueable
from .states import CANCELLED, QUEUED, Kind

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("packlab.queue")


def cancel(engine: Engine, job: Job, now: float) -> bool:
    """Cancel ``job``; ``False`` if it was already final. A running attempt's future is
    cancelled (its thread runs on until it returns; the result is ignored)."""
    if job.done():
        return False
    engine.withdraw(job, now)
    job._token += 1
    job.status = CANCELLED
    engine.event(job, Kind.CANCELLED, "by request", now)
    engine.record(job)
    return True


def requeue(engine: Engine, job: Job, now: float) -> Job:
    """Give a dead, failed or cancelled job a fresh set of attempts."""
    check_requeueable(job.id, job.status)  # checked here, in the loop: two callers cannot both pass
    job._token += 1
    was, n = job.status, job.attempts
    job.status, job.attempts, job._exc = QUEUED, 0, None
    engine.event(job, Kind.REQUEUED, f"was {was} after {n} attempts", now)
    engine.record(job)
    engine.enqueue(job)
    return job


def apply_requests(engine: Engine, rows: list[tuple[int, str, str]], now: float) -> None:
    """Carry out requests from other processes: ``(rowid, job id, "cancel"|"requeue")``."""
    for _, jid, action in rows:
        job = engine.lookup(jid)
        if job is None:
            continue
        try:
            if action == "cancel":
                cancel(engine, job, now)
            elif action == "requeue":
                requeue(engine, job, now)
        except PacklabError as e:
            log.warning("packlab queue: request to %s job %s refused: %s", action, jid, e)
