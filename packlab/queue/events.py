"""Subscribing to a queue's job events (``JobQueue.subscribe``), as huey's signals do.

The engine hands each event to :class:`Hub`, which only appends it to a queue when
anyone subscribed; one delivery thread calls the callbacks, so a slow or failing
callback never slows or breaks the queue (its exception is logged, and it stays
subscribed). Telemetry counts submissions, retries, failures and queue depth from here.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import bad_value
from .states import KINDS, PRIORITIES

log = logging.getLogger("packlab.queue")
_NAMES = {v: k for k, v in PRIORITIES.items()}


@dataclass(frozen=True, slots=True)
class Event:
    """One job event: what happened (``kind``, one of :data:`~.states.KINDS`), to which
    job (``job_id``, ``owner``, ``priority``, ``fn``), when (``t``, epoch s), and
    ``detail`` text as in ``Job.events``; ``queued`` is the policy's queue depth then."""

    kind: str
    job_id: str
    owner: str | None
    priority: str
    fn: str
    t: float
    detail: str
    queued: int


class Subscription:
    """The handle ``subscribe`` returns: call it (or ``.unsubscribe()``) to stop."""

    def __init__(self, hub: Hub, callback: Callable[[Event], None], kinds: frozenset[str] | None):
        self._hub, self.callback, self.kinds = hub, callback, kinds

    def unsubscribe(self) -> None:
        self._hub._remove(self)

    __call__ = unsubscribe


class Hub:
    """The subscribers of one queue and the thread that calls them.

    Examples
    --------
    >>> hub = Hub()
    >>> seen = []
    >>> sub = hub.subscribe(seen.append, kinds=["done"])
    >>> hub.emit("done", "a1", None, 1, "f", 0.0, "", 0); hub.emit("failed", "a1", None, 1, "f", 0.0, "", 0)
    >>> hub.drain(); [e.kind for e in seen]
    ['done']
    >>> sub(); hub.close()
    """

    def __init__(self) -> None:
        self._subs: tuple[Subscription, ...] = ()
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def subscribe(self, callback: Callable[[Event], None], kinds: Iterable[str] | str | None = None
                  ) -> Subscription:
        if not callable(callback):
            raise bad_value("callback", callback, "a function taking one packlab.queue.Event")
        ks = None
        if kinds is not None:
            ks = frozenset([kinds] if isinstance(kinds, str) else kinds)
            bad = sorted(k for k in ks if k not in KINDS)
            if bad or not ks:
                raise bad_value("kinds", kinds, f"event kinds among {list(KINDS)}",
                                "Pass kinds=None for every event.")
        sub = Subscription(self, callback, ks)
        with self._lock:
            self._subs = (*self._subs, sub)
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver, name="packlab-queue-events",
                                                daemon=True)
                self._thread.start()
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = tuple(s for s in self._subs if s is not sub)

    def emit(self, kind: str, job_id: str, owner: str | None, rank: int, fn: str, t: float, detail: str,
             queued: int) -> None:
        """Called by the engine for each event: near free when nobody subscribed."""
        if self._subs:
            self._q.put(Event(kind, job_id, owner, _NAMES.get(rank, str(rank)), fn, t, detail, queued))

    def _deliver(self) -> None:
        while True:
            ev = self._q.get()
            if ev is None:
                return
            if isinstance(ev, threading.Event):
                ev.set()
                continue
            for sub in self._subs:
                if sub.kinds is None or ev.kind in sub.kinds:
                    try:
                        sub.callback(ev)
                    except Exception:
                        log.exception("packlab queue: event callback %r failed on %s", sub.callback, ev)

    def drain(self, timeout: float = 30.0) -> None:
        """Block until every event emitted so far was delivered."""
        if self._thread is not None:
            done = threading.Event()
            self._q.put(done)
            done.wait(timeout)

    def close(self) -> None:
        self.drain()
        if self._thread is not None:
            self._q.put(None)
            self._thread.join(timeout=30)
            self._thread = None
