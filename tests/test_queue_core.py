"""The engine's pure core, driven directly: no Dask, no SQLite, no threads."""

from __future__ import annotations

import threading

import pytest

from packlab.errors import PacklabError
from packlab.queue import KINDS, STATUSES, Event, Kind, Retry, core
from packlab.queue.events import Hub
from packlab.queue.states import TERMINAL, UNFINISHED


def test_refill_waits_while_more_than_half_the_slots_are_busy():
    assert core.refill(16, 0) == 16
    assert core.refill(16, 9) == 0  # 7 free of 16: wait for a bigger batch
    assert core.refill(16, 8) == 8
    assert core.refill(1, 0) == 1 and core.refill(1, 1) == 0
    assert core.refill(4, 6) == 0  # over capacity (it shrank): nothing


def test_capacity_follows_threads_and_deepens_only_for_many_short_jobs():
    assert core.capacity(0, 8) == 8  # an adaptive cluster at zero workers still sees demand
    assert core.capacity(3, 8) == 24
    assert core.capacity(3, 8, mean_runtime=1e-4, samples=core.SAMPLES - 1) == 24  # too few seen
    assert core.capacity(3, 8, mean_runtime=1e-4, samples=core.SAMPLES) == 24 * core.DEEPEN
    assert core.capacity(3, 8, mean_runtime=3.0, samples=10_000) == 24  # long jobs: no hoarding


def test_after_failure_retries_with_the_backoff_then_dead_letters():
    r = Retry(attempts=3, base=2, jitter=False)
    o = core.after_failure(r, ConnectionError("x"), 1, 100.0, None, "ConnectionError: x")
    assert o.status == "retrying" and o.next_attempt == 102.0 and not o.late
    assert [k for k, _ in o.events] == [Kind.FAILED, Kind.RETRYING]
    assert "attempt 2 of 3" in o.events[1][1]
    late = core.after_failure(r, ConnectionError("x"), 1, 100.0, 101.0, "e")
    assert late.late  # the retry starts after the deadline
    dead = core.after_failure(r, ConnectionError("x"), 3, 100.0, None, "e")
    assert dead.status == "dead" and dead.next_attempt is None and "3 attempts exhausted" in dead.events[1][1]


def test_after_failure_fails_at_once_for_errors_not_retried():
    r = Retry(attempts=3, on=(ConnectionError,), give_up_on=(KeyError,))
    fail = core.after_failure(r, ValueError("v"), 1, 0.0, None, "ValueError: v")
    assert fail.status == "failed" and fail.events[1][0] == Kind.FAILED_FINAL
    dead = core.after_failure(r, KeyError("k"), 1, 0.0, None, "KeyError: k")
    assert dead.status == "dead" and "permanent error" in dead.events[1][1]


def test_mean_is_an_exponentially_weighted_average():
    m = None
    for x in [1.0] * 200:
        m = core.mean(m, x)
    assert m == pytest.approx(1.0)
    assert core.mean(0.0, 10.0, weight=0.1) == pytest.approx(1.0)


def test_messages_are_typed():
    c = core.Call(lambda now: now)
    assert c.box == [] and isinstance(c.done, threading.Event)
    assert core.Push("job").ready_at is None
    with pytest.raises(AttributeError):
        core.Push("job").extra = 1  # slots: a typo is an error, not a new field


def test_one_module_holds_statuses_and_event_kinds():
    assert len(KINDS) == 16 and len(set(KINDS)) == 16
    assert set(UNFINISHED) | TERMINAL == set(STATUSES)
    assert Kind.DEADLINE_MISSED == "deadline-missed" and Kind.RETRY_DEFERRED in KINDS


def test_hub_delivers_to_subscribers_off_the_caller_and_survives_a_bad_callback(caplog):
    hub = Hub()
    seen, boom = [], []

    def bad(ev):
        boom.append(ev)
        raise RuntimeError("a broken telemetry sink")

    hub.subscribe(bad)
    sub = hub.subscribe(seen.append, kinds=[Kind.DONE, Kind.FAILED])
    caller = threading.current_thread()
    on = []
    hub.subscribe(lambda ev: on.append(threading.current_thread()), kinds="done")
    hub.emit(Kind.SUBMITTED, "a1", "ann", 0, "m.f", 1.0, "owner=ann", 3)
    hub.emit(Kind.DONE, "a1", "ann", 0, "m.f", 2.0, "attempt 1", 2)
    hub.drain()
    assert [e.kind for e in seen] == ["done"] and len(boom) == 2
    assert seen[0] == Event("done", "a1", "ann", "high", "m.f", 2.0, "attempt 1", 2)
    assert on and on[0] is not caller  # delivered on the hub's own thread
    assert "a broken telemetry sink" in caplog.text
    sub()  # unsubscribe
    hub.emit(Kind.DONE, "a2", None, 1, "m.f", 3.0, "", 0)
    hub.drain()
    assert len(seen) == 1 and len(boom) == 3  # the failing callback is still subscribed
    hub.close()


@pytest.mark.parametrize("kinds", [["finished"], [], "bogus", [Kind.DONE, "nope"]])
def test_hub_refuses_unknown_kinds(kinds):
    with pytest.raises(PacklabError, match=r"kinds=.* is invalid: expected event kinds among"):
        Hub().subscribe(print, kinds=kinds)


def test_hub_refuses_a_callback_that_is_not_callable():
    with pytest.raises(PacklabError, match="callback='print' is invalid: expected a function"):
        Hub().subscribe("print")
