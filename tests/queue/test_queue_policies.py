"""Queue policies in process: ordering properties (hypothesis), aging, fair share, EDF."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packlab.errors import PacklabError
from packlab.queue import FIFO, Deadline, FairShare, Job, Priority, get_policy


def job(seq, *, rank=1, submitted=None, owner=None, deadline=None):
    return Job(f"j{seq}", seq, "f", None, rank=rank, owner=owner, deadline=deadline,
               submitted=float(seq) if submitted is None else submitted)


def drain(p, now=0.0):
    out = []
    while (j := p.pop(now)) is not None:
        out.append(j)
    return out


jobs_spec = st.lists(
    st.tuples(st.integers(0, 2), st.floats(0, 1000), st.one_of(st.none(), st.floats(1, 1e6)),
              st.sampled_from(["a", "b", "c", None])),
    max_size=60,
)


@given(jobs_spec, st.data())
@settings(max_examples=60, deadline=None)
def test_every_policy_pops_each_job_once_and_honours_remove(spec, data):
    for name in ("fifo", "priority", "fair-share", "deadline"):
        p = get_policy(name)
        js = [job(i, rank=r, submitted=t, deadline=d, owner=o) for i, (r, t, d, o) in enumerate(spec)]
        for j in js:
            p.push(j)
        removed = {j.id for j in js if data.draw(st.booleans(), label="remove")}
        for j in js:
            if j.id in removed:
                assert p.remove(j)
                assert not p.remove(j)  # twice is a no-op
        assert len(p) == len(js) - len(removed)
        out = drain(p)
        assert sorted(j.id for j in out) == sorted(j.id for j in js if j.id not in removed)
        assert len(p) == 0 and p.pop() is None


@given(st.lists(st.integers(0, 2), max_size=50))
def test_fifo_is_submission_order(ranks):
    p = FIFO()
    js = [job(i, rank=r) for i, r in enumerate(ranks)]
    for j in js:
        p.push(j)
    assert drain(p) == js


@given(st.lists(st.tuples(st.integers(0, 2), st.floats(0, 500)), max_size=60), st.floats(1, 100))
def test_priority_order_is_class_then_fifo_with_aging(spec, aging):
    p = Priority(aging=aging)
    js = [job(i, rank=r, submitted=t) for i, (r, t) in enumerate(spec)]
    for j in js:
        p.push(j)
    out = drain(p)
    keys = [j.submitted + j.rank * aging for j in out]
    assert keys == sorted(keys)
    # FIFO within a class
    for r in range(3):
        same = [j for j in out if j.rank == r]
        assert same == sorted(same, key=lambda j: (j.submitted, j.seq))


def test_priority_high_first_when_submitted_together():
    p = Priority(aging=60)
    js = [job(0, rank=2, submitted=0), job(1, rank=1, submitted=0), job(2, rank=0, submitted=0),
          job(3, rank=2, submitted=0)]
    for j in js:
        p.push(j)
    assert [j.seq for j in drain(p)] == [2, 1, 0, 3]


def test_aging_a_low_job_is_not_starved_by_a_stream_of_high_ones():
    aging = 10.0
    p = Priority(aging=aging)
    low = job(0, rank=2, submitted=0.0)
    p.push(low)
    # a new high job every second, forever; one job runs per second
    popped_at = None
    for t in range(1, 100):
        p.push(job(t, rank=0, submitted=float(t)))
        if p.pop(float(t)) is low:
            popped_at = t
            break
    assert popped_at is not None and popped_at <= 2 * aging + 1


@given(st.lists(st.tuples(st.one_of(st.none(), st.floats(0, 1e6)), st.integers(0, 2)), max_size=60))
def test_deadline_is_earliest_first_then_no_deadline(spec):
    p = Deadline()
    js = [job(i, deadline=d, rank=r) for i, (d, r) in enumerate(spec)]
    for j in js:
        p.push(j)
    out = drain(p)
    ds = [math.inf if j.deadline is None else j.deadline for j in out]
    assert ds == sorted(ds)
    nodl = [j for j in out if j.deadline is None]
    assert nodl == sorted(nodl, key=lambda j: (j.rank, j.seq))


def simulate_fair_share(policy, queued, slots, runtime, steps):
    """Run ``slots`` jobs at a time, each taking ``runtime[owner]`` s; return busy time per owner."""
    busy = dict.fromkeys(queued, 0.0)
    seq = 0
    for owner, n in queued.items():
        for _ in range(n):
            policy.push(job(seq, owner=owner))
            seq += 1
    now, running = 0.0, []  # (end, job)
    for _ in range(steps):
        while len(running) < slots:
            j = policy.pop(now)
            if j is None:
                break
            running.append((now + runtime[j.owner], j))
        if not running:
            break
        running.sort(key=lambda e: e[0])
        end, j = running.pop(0)
        busy[j.owner] += runtime[j.owner]
        now = end
        policy.finished(j, runtime[j.owner], now)
    return busy


@given(st.floats(0.5, 4), st.floats(0.01, 2), st.floats(0.01, 2), st.integers(1, 4))
@settings(max_examples=40, deadline=None)
def test_fair_share_running_time_converges_to_weights(w_b, rt_a, rt_b, slots):
    p = FairShare(weights={"a": 1.0, "b": w_b}, half_life="1000h")
    busy = simulate_fair_share(p, {"a": 5000, "b": 5000}, slots, {"a": rt_a, "b": rt_b}, 3000)
    share_b = busy["b"] / (busy["a"] + busy["b"])
    assert share_b == pytest.approx(w_b / (1 + w_b), abs=0.05)


def test_fair_share_light_owner_is_not_crowded_out():
    p = FairShare()
    for i in range(1000):
        p.push(job(i, owner="heavy"))
    now = 0.0
    for _ in range(100):  # heavy has been running alone for a while
        j = p.pop(now)
        now += 0.01
        p.finished(j, 0.01, now)
    for i in range(20):
        p.push(job(1000 + i, owner="light"))
    nxt = [p.pop(now) for _ in range(20)]
    assert all(j.owner == "light" for j in nxt)


def test_fair_share_usage_decays_with_half_life():
    p = FairShare(half_life="10s")
    j = job(0, owner="a")
    p.push(j)
    p.pop(0.0)
    p.finished(j, 8.0, 0.0)
    assert p.usage(10.0)["a"] == pytest.approx(4.0)
    assert p.usage(20.0)["a"] == pytest.approx(2.0)


def test_fair_share_rebases_without_overflow():
    p = FairShare(half_life="1s")
    rng = random.Random(0)
    now = 0.0
    for i in range(200):
        j = job(i, owner=rng.choice("ab"))
        p.push(j)
        now += 5.0  # exp(rate * 1000 s) would overflow without rebasing
        p.finished(p.pop(now), 1.0, now)
    assert all(math.isfinite(u) for u in p.usage(now).values())


def test_unknown_policy_and_bad_weight_are_clear_errors():
    with pytest.raises(PacklabError, match=r"policy='lifo' is unknown: choose one of .*fair-share"):
        get_policy("lifo")
    with pytest.raises(PacklabError, match=r"weights\['a'\]=-1 is invalid"):
        FairShare(weights={"a": -1})
    with pytest.raises(PacklabError, match="aging"):
        Priority(aging="soon")
