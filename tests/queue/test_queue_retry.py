"""Retry schedule, classification, retry budget and circuit breaker: pure decisions."""

from __future__ import annotations

import random

import pytest
from distributed import KilledWorker
from hypothesis import given
from hypothesis import strategies as st

from packlab.errors import PacklabError
from packlab.queue import CircuitBreaker, JobTimeout, Retry, RetryBudget
from packlab.queue.retry import as_retry


def test_exponential_schedule_is_capped():
    r = Retry(attempts=8, base="1s", cap="10s", jitter=False)
    assert r.schedule() == [1, 2, 4, 8, 10, 10, 10]
    assert Retry(attempts=4, backoff="linear", base=2, cap=5, jitter=False).schedule() == [2, 4, 5]
    assert Retry(attempts=3, backoff="constant", base=3, cap=5, jitter=False).schedule() == [3, 3]


@given(st.integers(1, 40), st.floats(0.01, 10), st.floats(1, 100))
def test_full_jitter_stays_within_the_schedule(n, base, extra):
    r = Retry(attempts=50, base=base, cap=base + extra, jitter=True)
    rng = random.Random(n)
    for _ in range(20):
        d = r.delay(n, rng)
        assert 0 <= d <= r.ceiling(n)
    assert r.ceiling(n) == min(base + extra, base * 2 ** (n - 1))


def test_jitter_spreads_delays():
    r = Retry(base=1, cap=60, jitter=True)
    ds = [r.delay(5, random.Random(i)) for i in range(200)]
    assert min(ds) < 4 and max(ds) > 12  # uniform over [0, 16]


def test_classification():
    r = Retry(on=(ConnectionError,), give_up_on=(PermissionError,))
    assert r.classify(ConnectionError()) == "retry"
    assert r.classify(PermissionError()) == "dead"
    assert r.classify(ValueError()) == "fail"
    # lost workers and timeouts are transient whatever `on` says
    assert r.classify(KilledWorker("k", "w", 0)) == "retry"
    assert r.classify(JobTimeout()) == "retry"
    # give_up_on wins over on
    assert Retry(give_up_on=(ValueError,)).classify(ValueError()) == "dead"


def test_retry_bad_input():
    with pytest.raises(PacklabError, match="attempts=0 is invalid"):
        Retry(attempts=0)
    with pytest.raises(PacklabError, match="backoff='fast' is invalid"):
        Retry(backoff="fast")
    with pytest.raises(PacklabError, match="base='soon' is invalid"):
        Retry(base="soon")
    with pytest.raises(PacklabError, match=r"cap=1\.0 is below base=5\.0"):
        Retry(base=5, cap=1)
    with pytest.raises(PacklabError, match=r"on=.* is invalid"):
        Retry(on=("ValueError",))
    with pytest.raises(PacklabError, match="retry='twice' is invalid"):
        as_retry("twice", None)
    assert as_retry(3, Retry(base=2)).attempts == 3 and as_retry(3, Retry(base=2)).base == 2


def test_budget_limits_retries_to_a_fraction_of_recent_submissions():
    b = RetryBudget(ratio=0.1, window="10s", minimum=2)
    for _ in range(50):
        b.submitted(now=0.0)
    granted = sum(b.acquire(now=1.0) for _ in range(20))
    assert granted == 5
    assert b.stats(1.0)["refused"] == 15
    # the window slides: old submissions and retries age out, the minimum remains
    assert [b.acquire(now=20.0) for _ in range(3)] == [True, True, False]


def test_breaker_transitions():
    cb = CircuitBreaker(threshold=3, cooldown="5s")
    cb.failure(0)
    cb.failure(1)
    cb.success(2)  # not consecutive: stays closed
    assert cb.state == "closed" and cb.failures == 0
    for t in (3, 4, 5):
        cb.failure(t)
    assert cb.state == "open" and not cb.allow(9.9)
    assert cb.allow(10) and cb.state == "half-open"
    assert not cb.allow(10.5)  # one probe only
    cb.failure(11)  # the probe failed: open again, for a new cooldown
    assert cb.state == "open" and not cb.allow(15) and cb.allow(16)
    cb.success(17)
    assert cb.state == "closed" and cb.allow(17)
    assert [(a, b) for _, a, b in cb.transitions] == [
        ("closed", "open"), ("open", "half-open"), ("half-open", "open"), ("open", "half-open"),
        ("half-open", "closed")]


def test_breaker_abandoned_probe_lets_the_next_one_probe():
    cb = CircuitBreaker(threshold=1, cooldown=5)
    cb.failure(0)
    assert cb.allow(6)
    cb.abandon(7)
    assert cb.state == "open" and cb.allow(7)


def test_breaker_bad_input():
    with pytest.raises(PacklabError, match="threshold=0 is invalid"):
        CircuitBreaker(threshold=0)
