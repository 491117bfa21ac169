"""Requests from other processes (``packlab queue cancel/requeue``): rows of the store's
``requests`` table become the core's :class:`~.core.Cancel` and :class:`~.core.Requeue`
events, applied in the driver thread like ``JobQueue.cancel``/``requeue`` (so a status
checked there cannot change before the action, and two requests for one job are handled
one after the other). It uses the engine's narrow API only: ``lookup`` and ``apply``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import PacklabError
from . import core

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("packlab.queue")

#: What each requested action becomes.
ACTIONS = {"cancel": core.Cancel, "requeue": core.Requeue}


def apply_requests(engine: Engine, rows: list[tuple[int, str, str]], now: float) -> None:
    """Carry out requests from other processes: ``(rowid, job id, "cancel"|"requeue")``."""
    for _, jid, action in rows:
        make = ACTIONS.get(action)
        job = engine.lookup(jid) if make is not None else None
        if job is None:
            continue
        answer = engine.apply(make(job), now)
        if isinstance(answer, PacklabError):
            log.warning("packlab queue: request to %s job %s refused: %s", action, jid, answer)
