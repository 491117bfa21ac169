"""The engine's pure core (``core`` functions and the ``machine.StateMachine`` state machine), driven
directly: no Dask, no SQLite, no threads."""

from __future__ import annotations

import threading

import pytest

from packlab.errors import LeaseError, PacklabError
from packlab.queue import KINDS, STATUSES, CircuitBreaker, Event, Kind, Retry, RetryBudget, core
from packlab.queue.events import Hub
from packlab.queue.job import Job, JobTimeout
from packlab.queue.machine import StateMachine
from packlab.queue.policies import get_policy
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


# -- the state machine (machine.StateMachine): events in, decisions out ----------------------------
T0 = 1000.0


def machine(policy="fifo", cap=2, retry=None, budget=None, breaker=None, fenced=False):
    return StateMachine(get_policy(policy), retry or Retry(attempts=1),
                        budget or RetryBudget(ratio=1.0, minimum=100),
                        breaker or CircuitBreaker(threshold=100, cooldown=10), max_in_flight=cap,
                        fenced=fenced)


def job(name, fn="m.f", **kw):
    return Job(name, int(name[1:]) if name[1:].isdigit() else 0, fn, b"payload", submitted=T0, **kw)


def of(decisions, kind):
    return [d for d in decisions if isinstance(d, kind)]


def recorded(decisions):
    return [(d.job.id, d.kind) for d in of(decisions, core.Record)]


def start(c, now=T0):
    """Admit, hand over with made-up futures (``fut-<id>``), return the jobs started."""
    out = c.handle(core.Admit(), now)
    jobs = [j for d in of(out, core.HandOver) for j in d.jobs]
    if jobs:
        sent = c.handle(core.Sent(jobs, [f"fut-{j.id}" for j in jobs]), now)
        assert of(sent, core.Watch)[0].items == [(j, j._token, f"fut-{j.id}") for j in jobs]
    return jobs


def succeed(c, j, now, runtime=0.5):
    c.handle(core.Ended(j, j._token, True), now)
    return c.handle(core.Fetched([(j, j._token, j._future)], [(True, (j.id.upper(), runtime), "")]), now)


def test_core_admits_in_the_policys_order_up_to_capacity_and_refills_freed_slots():
    c = machine("priority", cap=2)
    lo, hi, no = job("j1", rank=2), job("j2", rank=0), job("j3", rank=1)
    for j in (lo, hi, no):
        assert c.handle(core.Push(j), T0) == []  # queued: nothing to do yet
    out = c.handle(core.Admit(), T0)
    assert [[j.id for j in d.jobs] for d in of(out, core.HandOver)] == [["j2", "j3"]]
    assert hi.status == "queued"  # running only once Dask has it
    sent = c.handle(core.Sent([hi, no], ["fut-hi", "fut-no"]), T0)
    assert recorded(sent) == [("j2", "running"), ("j3", "running")]
    assert [d.job for d in of(sent, core.Update)] == [hi, no]
    assert hi.status == "running" and hi.attempts == 1 and set(c.running) == {"j2", "j3"}
    assert c.handle(core.Admit(), T0) == []  # full
    fetch = c.handle(core.Ended(hi, hi._token, True), T0 + 1)
    assert of(fetch, core.Fetch)[0].items == [(hi, hi._token, "fut-hi")] and set(c.running) == {"j3"}
    done = c.handle(core.Fetched(of(fetch, core.Fetch)[0].items, [(True, (42, 0.5), "")]), T0 + 1)
    assert hi.status == "done" and hi._result == 42 and recorded(done) == [("j2", "done")]
    assert of(done, core.Update)[0].result  # the driver stores the result
    assert [j.id for j in start(c, T0 + 1)] == ["j1"]


def test_core_capacity_follows_the_clusters_threads_unless_fixed():
    c = StateMachine(get_policy("fifo"), Retry(attempts=1), RetryBudget(), CircuitBreaker(), factor=4)
    assert c.capacity() == 4  # no threads yet: still some demand
    c.handle(core.Threads(3), T0)
    assert c.capacity() == 12 and machine(cap=5).capacity() == 5


def test_core_failure_waits_on_a_retry_timer_then_is_admitted_again():
    c = machine(retry=Retry(attempts=2, base=1, jitter=False))
    j = job("j1")
    c.handle(core.Push(j), T0)
    start(c)
    out = c.handle(core.Ended(j, j._token, False, ConnectionError("flaky"), "tb"), T0 + 0.5)
    assert recorded(out) == [("j1", "failed"), ("j1", "retrying")]
    assert j.status == "retrying" and j.next_attempt == T0 + 1.5 and c.next_due() == T0 + 1.5
    assert of(out, core.Update)[0].fields["error"] == "ConnectionError: flaky" and not c.running
    c.handle(core.Tick(), T0 + 1.0)
    assert c.handle(core.Admit(), T0 + 1.0) == []  # still backing off
    c.handle(core.Tick(), T0 + 1.5)
    assert start(c, T0 + 1.5) == [j] and j.attempts == 2 and j.status == "running"
    succeed(c, j, T0 + 2)
    assert j.status == "done" and j.result() == "J1"


def test_core_defers_a_retry_while_the_budget_is_spent():
    c = machine(retry=Retry(attempts=3, base=1, jitter=False), budget=RetryBudget(ratio=0, minimum=0))
    j = job("j1")
    c.handle(core.Push(j), T0)
    start(c)
    c.handle(core.Ended(j, j._token, False, OSError("x"), ""), T0)
    out = c.handle(core.Tick(), T0 + 1)
    assert recorded(out) == [("j1", "retry-deferred")] and j.status == "retrying"
    assert c.next_due() == T0 + 2 and recorded(c.handle(core.Tick(), T0 + 2)) == []  # recorded once


def test_core_timeout_cancels_the_future_and_ignores_the_late_end():
    c = machine(retry=Retry(attempts=1))
    j = job("j1", timeout=5.0)
    c.handle(core.Push(j), T0)
    start(c)
    tok = j._token
    assert c.next_due() == T0 + 5
    assert c.handle(core.Tick(), T0 + 4.9) == []
    out = c.handle(core.Tick(), T0 + 5)
    assert of(out, core.CancelFutures)[0].futures == ["fut-j1"]
    assert isinstance(j._exc, JobTimeout) and j.status == "dead" and not c.running
    assert c.handle(core.Ended(j, tok, True), T0 + 6) == []  # the old attempt's end: ignored


def test_core_flags_a_missed_deadline_once_and_never_drops_the_job():
    c = machine()
    j = job("j1", deadline=T0 + 10)
    c.handle(core.Push(j), T0)
    out = c.handle(core.Tick(), T0 + 10)
    assert j.late and recorded(out) == [("j1", "deadline-missed")] and of(out, core.Update)
    start(c, T0 + 11)  # it still runs
    done = succeed(c, j, T0 + 12)
    assert recorded(done) == [("j1", "done")]  # flagged once only


def test_core_breaker_holds_jobs_then_probes_one_and_releases_the_rest():
    c = machine(cap=4, breaker=CircuitBreaker(threshold=1, cooldown=10))
    bad = job("j1", fn="m.g")
    c.handle(core.Push(bad), T0)
    start(c)
    c.handle(core.Ended(bad, bad._token, False, OSError("down"), ""), T0)
    assert bad.status == "dead" and c.next_due() == T0 + 10  # the probe timer
    a, b, other = job("j2", fn="m.g"), job("j3", fn="m.g"), job("j4")
    for j in (a, b, other):
        c.handle(core.Push(j), T0 + 1)
    out = c.handle(core.Admit(), T0 + 1)
    assert recorded(out) == [("j2", "held"), ("j3", "held")]
    assert [j.id for d in of(out, core.HandOver) for j in d.jobs] == ["j4"]
    assert c.snapshot(T0 + 1)["held"] == {"m.g": 2} and c.breakers.state("m.g") == "open"
    out = c.handle(core.Tick(), T0 + 10)
    assert recorded(out) == [("j2", "probe")] and of(out, core.HandOver)[0].jobs == [a]
    c.handle(core.Sent([a], ["fut-a"]), T0 + 10)
    released = succeed(c, a, T0 + 11)
    assert ("j3", "released") in recorded(released) and c.breakers.state("m.g") == "closed"
    assert [j.id for j in start(c, T0 + 11)] == ["j3"]


def test_core_cancels_and_requeues_running_and_queued_jobs():
    c = machine(cap=1)
    run, wait = job("j1"), job("j2")
    c.handle(core.Push(run), T0)
    c.handle(core.Push(wait), T0)
    start(c)
    tok = run._token
    out = c.handle(core.Cancel(run), T0 + 1)
    assert of(out, core.CancelFutures)[0].futures == ["fut-j1"] and of(out, core.Reply)[0].value is True
    assert run.status == "cancelled" and not c.running and recorded(out) == [("j1", "cancelled")]
    assert c.handle(core.Ended(run, tok, True), T0 + 2) == []  # its late end is ignored
    out = c.handle(core.Cancel(wait), T0 + 2)
    assert of(out, core.Reply)[0].value is True and len(c.policy) == 0 and not of(out, core.CancelFutures)
    assert of(c.handle(core.Cancel(wait), T0 + 3), core.Reply)[0].value is False  # already final
    out = c.handle(core.Requeue(run), T0 + 3)
    assert of(out, core.Reply)[0].value is run and run.status == "queued" and run.attempts == 0
    assert recorded(out) == [("j1", "requeued")]
    err = of(c.handle(core.Requeue(run), T0 + 3), core.Reply)[0].value  # queued: refused, not raised
    assert isinstance(err, PacklabError) and "only dead, failed or cancelled" in str(err)
    assert start(c, T0 + 4) == [run]


def test_core_takes_back_jobs_not_handed_over_and_stops_on_a_fenced_refusal():
    c = machine(cap=2, fenced=True)
    a, b = job("j1"), job("j2")
    c.handle(core.Push(a), T0)
    c.handle(core.Push(b), T0)
    out = c.handle(core.Admit(), T0)
    assert c.handle(core.Unsent(of(out, core.HandOver)[0].jobs), T0) == []  # the lease could not be read
    assert a.status == "queued" and len(c.policy) == 2
    start(c)
    out = c.handle(core.Ended(a, a._token, False, LeaseError("another driver"), ""), T0)
    assert of(out, core.LeaseLost) and a.status == "running"  # nothing recorded: not our store now
    stop = c.handle(core.Stop(), T0)
    assert sorted(of(stop, core.CancelFutures)[0].futures) == ["fut-j1", "fut-j2"]


def test_core_resume_waits_out_the_rest_of_a_backoff():
    c = machine()
    j = job("j1")
    j.status, j.next_attempt = "retrying", T0 + 30
    out = c.handle(core.Resume(j), T0)
    assert recorded(out) == [("j1", "resumed")] and "next attempt in 30.000 s" in out[0].detail
    assert c.handle(core.Admit(), T0) == [] and c.next_due() == T0 + 30
    c.handle(core.Tick(), T0 + 30)
    assert start(c, T0 + 30) == [j]


def test_core_failed_hand_over_counts_the_attempt():
    c = machine(retry=Retry(attempts=1))
    j = job("j1")
    c.handle(core.Push(j), T0)
    out = c.handle(core.Sent(of(c.handle(core.Admit(), T0), core.HandOver)[0].jobs, None,
                             [RuntimeError("scheduler gone")]), T0)
    assert recorded(out)[:2] == [("j1", "running"), ("j1", "failed")] and j.attempts == 1 and not c.running
    assert not of(out, core.Watch)


def test_core_fetches_attempts_that_finished_together_in_one_batch():
    c = machine(cap=4)
    jobs = [job(f"j{i}") for i in range(3)]
    for j in jobs:
        c.handle(core.Push(j), T0)
    start(c)
    out = c.handle_all([core.Ended(j, j._token, True) for j in jobs], T0 + 1)
    assert [[it[0] for it in d.items] for d in out] == [jobs] and not c.running
