"""30 % of job attempts failing transiently at random, and an outage that fails every
attempt: every job completes exactly once, and the recorded events show the retry budget
and the circuit breaker doing what packlab/queue/retry.py and machine.py say.

The failures are drawn inside the job from a seeded RNG (seed, job key, attempt number),
so a failing run replays exactly with its printed ``PACKLAB_CHAOS_SEED``.
"""

from __future__ import annotations

import math
import os
import random
import sqlite3
import sys
import threading
import time
from collections import Counter

import cloudpickle
import pytest

from packlab.queue import KINDS, CircuitBreaker, JobQueue, Retry, RetryBudget

from .drivers import effects_db, query, record

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(sys.modules[__name__])

RATE = 0.3  # of attempts failing
JOBS = 80
BUDGET = dict(ratio=0.3, window=3.0, minimum=6)
FAST = Retry(attempts=12, base=0.01, cap=0.05, jitter=True, on=(ConnectionError,))


@pytest.fixture(scope="module")
def cluster(chaos_cluster):
    return chaos_cluster


def attempt_of(key: str, attempts_log: str) -> int:
    """Count this attempt of ``key`` (an append per attempt, from any worker)."""
    with open(attempts_log, "a") as f:
        f.write(key + "\n")
    with open(attempts_log) as f:
        return sum(line == key + "\n" for line in f)


def flaky(key: str, seed: int, attempts_log: str, db: str) -> str:
    """Fails ``RATE`` of its attempts with a transient error, drawn from (seed, key, attempt);
    on success records its side effect idempotently."""
    n = attempt_of(key, attempts_log)
    if random.Random(f"{seed}:{key}:{n}").random() < RATE:
        raise ConnectionError(f"transient failure of {key}, attempt {n}")
    con = sqlite3.connect(db, timeout=30)
    with con:
        con.execute("INSERT OR IGNORE INTO effects VALUES (?)", (key,))
    con.close()
    return key


def outage(key: str, flag: str, attempts_log: str) -> str:
    """Fails while ``flag`` exists (a service down for everyone: failures cluster)."""
    attempt_of(key, attempts_log)
    if os.path.exists(flag):
        raise ConnectionError("the service is down")
    return key


def events(store: str) -> list[tuple[str, float, str, str]]:
    """(job id, time, kind, detail) of every recorded event, in the order recorded."""
    return query(store, "SELECT job_id, t, kind, detail FROM events ORDER BY rowid")


def exactly_once(store: str, keys: set[str]) -> tuple[int, int]:
    """Every key one job, done, with one ``done`` event: (lost, duplicated)."""
    rec = record(store)
    assert set(rec) == keys and all(v == ("done", 1) for v in rec.values()), rec
    return len(keys - set(rec)), sum(n - 1 for _, n in rec.values())


def planned_failures(seed: int) -> int:
    """The failed attempts ``flaky`` will inject for ``seed`` (its draws are deterministic)."""
    total = 0
    for i in range(JOBS):
        n = 1
        while random.Random(f"{seed}:k{i}:{n}").random() < RATE:
            total, n = total + 1, n + 1
    return total


def test_30_percent_transient_failures_complete_every_job_within_the_retry_budget(cluster, tmp_path,
                                                                                  chaos_rng, figure):
    # A seed whose failures ask for more retries than the budget's ratio x submissions (the
    # premise of the "some waited" check below; about 7 % of seeds inject fewer).
    seed = chaos_rng.randrange(2**32)
    while planned_failures(seed) <= 1.2 * BUDGET["ratio"] * JOBS:
        seed = chaos_rng.randrange(2**32)
    store, log, db = str(tmp_path / "q.db"), str(tmp_path / "attempts"), effects_db(str(tmp_path / "fx.db"))
    budget = RetryBudget(**BUDGET)
    with JobQueue(cluster, store=store, max_in_flight=JOBS, retry=FAST, retry_budget=budget,
                  breaker=CircuitBreaker(threshold=6, cooldown=0.2)) as q:
        jobs = [q.submit(flaky, f"k{i}", seed, log, db, key=f"k{i}") for i in range(JOBS)]
        q.wait(timeout=120)
        assert [j.result() for j in jobs] == [f"k{i}" for i in range(JOBS)]  # 100 % complete
    keys = {f"k{i}" for i in range(JOBS)}
    lost, duplicated = exactly_once(store, keys)
    assert sorted(k for (k,) in query(db, "SELECT key FROM effects")) == sorted(keys)
    evs = events(store)
    kinds = Counter(k for _, _, k, _ in evs)
    assert set(kinds) <= set(KINDS)
    attempts = Counter(open(log).read().split())
    failed = sum(attempts.values()) - JOBS
    assert kinds["failed"] == failed and kinds["retrying"] == failed  # each failure retried
    assert kinds["done"] == JOBS and not kinds["dead"] and not kinds["failed-final"]

    # The budget's contract (RetryBudget.acquire, one-second buckets): a retry is taken only
    # while the retries taken in the window are fewer than max(minimum, ratio x the
    # submissions in it). A retry's attempt starts ("running", attempt > 1) as the budget
    # grants it (max_in_flight leaves room for every job): so any window - 2 s of retry
    # starts holds at most that many, counting the submissions of window + 2 s before.
    w, subs = BUDGET["window"], sorted(t for _, t, k, _ in evs if k == "submitted")
    starts = sorted(t for _, t, k, d in evs if k == "running" and d != "attempt 1")
    assert len(starts) == failed
    worst = 0.0
    for r in starts:
        n = sum(r - (w - 2) < s <= r for s in starts)
        allowed = math.ceil(max(BUDGET["minimum"], BUDGET["ratio"] * sum(r - w - 2 < s <= r for s in subs)))
        assert n <= allowed, (r, n, allowed)
        worst = max(worst, n / allowed)
    deferred = kinds["retry-deferred"]
    assert deferred > 0  # 30 % failing asks for more retries than 0.3 x submissions: some waited
    span = starts[-1] - subs[0]
    figure("transient_failures", {"jobs": JOBS, "failed_attempts": failed, "deferred": deferred},
           f"30 % transient failures (seed {seed}): {JOBS} jobs completed, lost {lost}, duplicated "
           f"{duplicated}, {failed} failed attempts injected and retried over {span:.1f} s "
           f"({failed / JOBS:.2f} retries per submission, budget ratio {BUDGET['ratio']}, at worst "
           f"{worst:.0%} of the budget in any window), {deferred} retries deferred by the budget, "
           f"breaker: {kinds['held']} held, {kinds['probe']} probes")


def replay_breaker(evs: list, fn_jobs: set[str], threshold: int, cooldown: float) -> dict[str, int]:
    """Follow CircuitBreaker's contract over one function's recorded events and assert it:
    ``threshold`` consecutive failed attempts open the circuit; while open no attempt
    starts; after ``cooldown`` one probe starts (a "probe" event, or the first admission);
    while half-open no other attempt starts; any failure then reopens it, a success closes
    it and releases the held jobs. Returns how often each transition happened."""
    state, failures, opened, probe, seen = "closed", 0, 0.0, None, Counter()
    for jid, t, kind, _ in evs:
        if jid not in fn_jobs:
            continue
        if kind == "failed":
            failures += 1
            if state == "half-open" or (state == "closed" and failures >= threshold):
                state, opened = "open", t
                seen["opened"] += 1
        elif kind in ("done", "released"):
            if state != "closed":
                seen["closed"] += 1
            state, failures = "closed", 0
        elif kind == "probe":
            assert state == "open" and t >= opened + cooldown - 1e-6, (jid, t, state, opened)
            state, probe = "half-open", jid
            seen["probes"] += 1
        elif kind == "held":
            assert state != "closed", (jid, t)
            seen["held"] += 1
        elif kind == "running":
            if state == "open":  # admitted as the circuit turns half-open: the probe itself
                assert t >= opened + cooldown - 1e-6, f"{jid} started {t - opened:.3f} s into a cooldown"
                state, probe = "half-open", jid
                seen["probes"] += 1
            elif state == "half-open":
                assert jid == probe, f"{jid} started while {probe} was the circuit's one probe"
    return seen


def test_an_outage_opens_the_breaker_which_probes_after_its_cooldown_and_closes(cluster, tmp_path, figure):
    threshold, cooldown, n = 3, 0.3, 30
    store, log, flag = str(tmp_path / "q.db"), str(tmp_path / "attempts"), tmp_path / "down"
    flag.touch()
    with JobQueue(cluster, store=store, max_in_flight=2, retry=Retry(attempts=40, base=0.01, cap=0.02),
                  retry_budget=RetryBudget(ratio=1.0, window=5, minimum=100),
                  breaker=CircuitBreaker(threshold=threshold, cooldown=cooldown)) as q:
        jobs = [q.submit(outage, f"o{i}", str(flag), log, key=f"o{i}") for i in range(n)]
        t0 = time.monotonic()
        while sum(k == "probe" for _, _, k, _ in events(store)) < 3:  # two probes failed, one more
            assert time.monotonic() - t0 < 60, "the breaker never probed"
            time.sleep(0.02)
        ended = threading.Timer(cooldown / 2, flag.unlink)  # the service comes back
        ended.start()
        q.wait(timeout=120)
        ended.join()
        assert all(j.status == "done" for j in jobs)
    lost, duplicated = exactly_once(store, {f"o{i}" for i in range(n)})
    evs = events(store)
    seen = replay_breaker(evs, {j.id for j in jobs}, threshold, cooldown)
    attempts = sum(Counter(open(log).read().split()).values())
    assert seen["opened"] >= 3 and seen["probes"] >= 3 and seen["closed"] >= 1 and seen["held"] > 0
    figure("breaker_outage", dict(seen),
           f"outage: {n} jobs completed, lost {lost}, duplicated {duplicated}; {attempts - n} failed "
           f"attempts in all; the breaker opened {seen['opened']} times, probed {seen['probes']} times, held "
           f"{seen['held']} jobs and closed {seen['closed']} time(s) (threshold {threshold}, cooldown "
           f"{cooldown} s)")
