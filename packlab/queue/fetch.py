"""How finished Dask futures reach the driver thread: completions through
``distributed.as_completed`` (public API), and batched result fetching, both off the
driver thread.

:class:`Completions` keeps one ``as_completed`` for every attempt the queue hands to
Dask (``.update()`` once per hand-over, on the client's event loop) and one thread
that drains it with ``.batches()``: what finished meanwhile arrives as one batch, one
message to the driver thread. Results are fetched by one helper thread, one
``client.gather`` at a time: what finishes meanwhile is fetched together next, so under
load a gather carries many results and the driver thread never waits on the network.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from distributed import as_completed

FETCH_WAIT = 0.02  # s: results wait at most this long to share a gather
RESULT_WAIT = 30.0  # s: the longest a single result may take when a shared gather failed


class Completions:
    """Posts ``[(job, token), ...]`` batches of finished attempts to ``post``."""

    def __init__(self, client, post: Callable[[list], None]) -> None:
        self.client, self._post = client, post
        self._ac = as_completed([], loop=client.loop)
        self._who: dict[Any, list] = {}  # future -> [(job, token), ...] still to report
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name="packlab-queue-completions", daemon=True)
        self._thread.start()

    def add(self, batch: list[tuple[Any, int, Any]]) -> None:
        """Watch ``(job, token, future)`` items: each is posted once its future is done."""
        with self._lock:
            for job, tok, fut in batch:
                self._who.setdefault(fut, []).append((job, tok))
        # Run on the client's event loop: one wake-up of it per batch, not one per future.
        self.client.loop.add_callback(self._ac.update, [fut for _, _, fut in batch])
        self._wake.set()

    def _drain(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            while not self._closed:
                for futs in self._ac.batches():  # ends when nothing is left to wait for
                    with self._lock:
                        items = [it for f in futs for it in self._who.pop(f, ())]
                    if items:
                        self._post(items)
                    if self._closed:
                        return
                with self._lock:
                    if not self._who:
                        break
                time.sleep(0.001)  # added futures whose update has not run on the loop yet

    def close(self) -> None:
        self._closed = True
        self._wake.set()


def watch(client, batch: list[tuple[Any, int, Any]], post: Callable[[Any, int], None],
          batched: bool | None = None) -> Completions:
    """Call ``post(job, token)`` when each ``(job, token, future)`` of ``batch``
    finishes (one :class:`Completions` of its own; ``batched`` is accepted for
    compatibility: there is one code path)."""
    c = Completions(client, lambda items: [post(j, t) for j, t in items])
    c.add(batch)
    return c


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
    thread; ``post(batch, outcomes)`` hands each batch back to the driver thread.

    The driver calls :meth:`add` with newly finished attempts, :meth:`kick` when a
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
