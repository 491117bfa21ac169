"""How finished Dask futures reach the admission loop: completion callbacks and
batched result fetching, both off the loop thread.

A completion only posts a message to the loop's inbox. Results are fetched by one
helper thread, one ``client.gather`` at a time: what finishes meanwhile is fetched
together next, so under load a gather carries many results and the loop never waits
on the network.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

try:  # the coroutine behind Future.add_done_callback; lets one wake-up cover a batch
    from distributed.client import done_callback as _done_callback
except ImportError:  # a distributed without it: one Future.add_done_callback per future
    _done_callback = None

FETCH_WAIT = 0.02  # s: results wait at most this long to share a gather
RESULT_WAIT = 30.0  # s: the longest a single result may take when a shared gather failed


def watch(client, batch: list[tuple[Any, int, Any]], post: Callable[[Any, int], None],
          batched: bool | None = None) -> None:
    """Call ``post(job, token)`` when each ``(job, token, future)`` of ``batch`` finishes.

    ``batched`` (default: when ``distributed`` offers it) waits for the whole batch in
    one coroutine on the client's event loop: one wake-up per batch instead of one per
    future, and no hop through Dask's callback thread. Otherwise it falls back on the
    public ``Future.add_done_callback``.
    """
    if batched is None:
        batched = _done_callback is not None
    if batched and _done_callback is not None:
        client.loop.add_callback(_watch, batch, post)
        return
    for job, tok, fut in batch:
        fut.add_done_callback(lambda _f, j=job, t=tok: post(j, t))


async def _watch(batch: list, post: Callable[[Any, int], None]) -> None:
    def done(_fut, job, tok):
        post(job, tok)

    await asyncio.gather(*(_done_callback(f, partial(done, job=j, tok=t)) for j, t, f in batch))


def gather(client, futures: list) -> list[tuple[bool, Any, str]]:
    """``(True, result, "")`` or ``(False, exception, traceback)`` per future: one round
    trip for all of them; one bounded wait per future only if the shared one fails."""
    try:
        return [(True, r, "") for r in client.gather(futures)]
    except Exception:
        pass
    out = []
    for fut in futures:
        try:
            out.append((True, fut.result(timeout=RESULT_WAIT), ""))
        except Exception as e:
            out.append((False, e, traceback.format_exc()))
    return out


class Fetcher:
    """Collects succeeded attempts and fetches their results in batches on a helper
    thread; ``post(batch, outcomes)`` hands each batch back to the loop.

    The loop calls :meth:`add` with newly finished attempts, :meth:`kick` when a
    fetch ended or its short wait ran out, and :meth:`finished` when a batch came back.
    """

    def __init__(self, client, post: Callable[[list, Any], None]) -> None:
        self.client, self._post = client, post
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="packlab-queue-fetch")
        self._pending: list[tuple[Any, int, Any]] = []
        self._since = 0.0
        self._busy = False

    def add(self, items: list[tuple[Any, int, Any]], now: float) -> float | None:
        """Queue ``(job, token, future)`` items; returns when to :meth:`kick` if they
        opened a new batch (they wait up to ``FETCH_WAIT`` for company)."""
        start = bool(items) and not self._pending
        if start:
            self._since = now
        self._pending.extend(items)
        return now + FETCH_WAIT if start else None

    def kick(self, now: float, enough: int) -> None:
        """Start a gather if none runs and the batch is big enough or has waited enough."""
        if self._busy or not self._pending:
            return
        if len(self._pending) < enough and now < self._since + FETCH_WAIT:
            return  # a few more milliseconds make one gather out of several
        batch, self._pending = self._pending, []
        self._busy = True
        f = self._pool.submit(gather, self.client, [fut for _, _, fut in batch])
        f.add_done_callback(lambda f: self._post(batch, f))

    def finished(self) -> None:
        self._busy = False

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False)
