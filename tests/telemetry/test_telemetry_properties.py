"""Invariants over generated inputs: cost is conserved, downsampling is bounded and stable,
alerts alternate and respect their cooldown."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from packlab.telemetry.alerts import Rule, evaluate
from packlab.telemetry.cost import JobInterval, WorkerInterval, attribute
from packlab.telemetry.pricing import Pricing
from packlab.telemetry.series import downsample, max_rows

P = Pricing(core_hour=0.5, gb_hour=0.01, gpu_hour=2.0, spot_discount=0.6, reserved_discount=0.3)
times = st.integers(0, 10_000)


@st.composite
def runs(draw):
    """Held workers (never two at once under one name) and job intervals on them or elsewhere."""
    held = []
    for i in range(draw(st.integers(0, 4))):
        a, b = sorted(draw(st.tuples(times, times)))
        held.append(WorkerInterval(f"w{i}", a, b, cores=draw(st.integers(1, 4)),
                                   memory=draw(st.integers(0, 2**34)), gpus=draw(st.integers(0, 1)),
                                   market=draw(st.sampled_from(["on-demand", "spot", "reserved"]))))
    busy = []
    for _ in range(draw(st.integers(0, 12))):
        a, b = sorted(draw(st.tuples(times, times)))
        busy.append(JobInterval(draw(st.sampled_from("abcd")), f"w{draw(st.integers(0, 5))}", a, b,
                                threads=draw(st.integers(1, 3))))
    return held, busy


@settings(max_examples=150, deadline=None)
@given(runs())
def test_cost_is_conserved_and_never_negative(run):
    held, busy = run
    r = attribute(P, held, busy)
    assert math.isclose(r.total, math.fsum(r.jobs.values()) + r.idle, rel_tol=1e-9, abs_tol=1e-6)
    assert r.idle >= -1e-9 and all(c >= -1e-9 for c in r.jobs.values())
    expected = math.fsum(P.hourly(cores=w.cores, memory=w.memory, gpus=w.gpus, market=w.market)
                         * (w.stop - w.start) / 3600 for w in held)
    assert math.isclose(r.total, expected, rel_tol=1e-9, abs_tol=1e-6)
    assert 0 <= r.unheld_seconds <= r.busy_seconds + 1e-6


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 40 * 86400), st.floats(-1e6, 1e6)), max_size=300),
       st.floats(0, 40 * 86400), st.sampled_from(["mean", "max", "min", "last", "sum"]))
def test_downsampling_is_bounded_and_stable(rows, now, how):
    out = downsample(rows, now, how=how)
    past = [r for r in rows if r[0] <= now]
    if past:
        assert len([r for r in out if r[0] <= now]) <= max_rows(now - min(t for t, _ in past))
    assert len(out) <= len(rows)
    assert len({t for t, _ in out}) == len(out)  # one row per bucket
    # each row sits at its bucket's start, alone in its bucket, in the same tier: stable
    assert downsample(out, now, how=how) == out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=80), st.integers(0, 300))
def test_alerts_alternate_and_keep_their_cooldown(levels, cooldown):
    rule = Rule("busy", "utilisation", "above_for", 0.9, window=10, cooldown=cooldown, min_samples=1)
    state, fired, sent = None, [], []
    for i, high in enumerate(levels):
        now = 10.0 * (i + 1)
        rows = [(now - 10, 0.95 if high else 0.1), (now, 0.95 if high else 0.1)]
        alerts, state = evaluate([rule], {"utilisation": rows}, now=now, state=state)
        sent += [a.status for a in alerts]
        fired += [now for a in alerts if a.status == "firing"]
    assert all(a != b for a, b in itertools.pairwise(sent))  # firing, resolved, firing...
    assert not sent or sent[0] == "firing"
    assert all(b - a >= cooldown for a, b in itertools.pairwise(fired))
