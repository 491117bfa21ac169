"""JobQueue on a real LocalCluster with real failures: retries, DLQ, breaker, budget,
policies, idempotent keys, restart, CLI, bad input. Timeout tests come last: a timed-out
function keeps its worker thread busy until it returns."""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import sys
import threading
import time

import cloudpickle
import pytest
from click.testing import CliRunner
from support import TESTS, race, small_cluster

import packlab
from packlab.cli import main as cli
from packlab.errors import PacklabError, QueueClosed, QueueFailed
from packlab.queue import FIFO, CircuitBreaker, FairShare, JobQueue, JobTimeout, Retry, RetryBudget, Store

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import tests/

FAST = Retry(attempts=5, base="0.05s", cap="0.1s", jitter=False)


# -- job functions (run on workers; state lives in files) ------------------------------
def calls(path) -> int:
    with open(path, "a") as f:
        f.write("x\n")
    with open(path) as f:
        return sum(1 for _ in f)


def flaky(path, fail_times, exc=ConnectionError):
    n = calls(path)
    if n <= fail_times:
        raise exc(f"call {n} fails")
    return n


def broken_while(flag, path):
    calls(path)
    if os.path.exists(flag):
        raise RuntimeError(f"broken: {flag} exists")
    return "fixed"


def nap(seconds, path=None):
    if path:
        calls(path)
    time.sleep(seconds)
    return seconds


def hold(flag, path):
    """Occupy a worker until the test removes ``flag`` (fails loudly after 60 s)."""
    calls(path)
    t0 = time.monotonic()
    while os.path.exists(flag):
        if time.monotonic() - t0 > 60:
            raise TimeoutError(f"{flag} was never removed")
        time.sleep(0.005)
    return "released"


def ncalls(path) -> int:
    return sum(1 for _ in open(path)) if os.path.exists(path) else 0


def when(job, kind):
    return [t for t, k, _ in job.events if k == kind]


def until(cond, what, timeout=60.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"timed out waiting until {what}"
        time.sleep(0.01)


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    with small_cluster() as pc:
        yield pc


@pytest.fixture
def queue(cluster, tmp_path):
    made = []

    def make(**kw):
        kw.setdefault("store", str(tmp_path / "q.db"))
        kw.setdefault("retry", FAST)
        q = JobQueue(cluster, **kw)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


# -- retries ----------------------------------------------------------------------------
def test_flaky_job_takes_exact_attempts_and_waits_out_the_backoff(queue, tmp_path):
    q = queue()
    r = Retry(attempts=5, base="0.2s", cap="0.5s", jitter=False)
    job = q.submit(flaky, str(tmp_path / "c"), 3, retry=r)
    assert job.result(timeout=60) == 4
    assert job.attempts == 4 and ncalls(tmp_path / "c") == 4
    failed, running = when(job, "failed"), when(job, "running")
    assert len(failed) == 3 and len(running) == 4
    for delay, t_fail, t_next in zip(r.schedule(), failed, running[1:], strict=False):
        assert t_next - t_fail >= delay  # never earlier than the schedule
    assert [k for _, k, _ in job.events].count("retrying") == 3


def test_jittered_delays_are_within_schedule_and_respected(queue, tmp_path):
    q = queue()
    r = Retry(attempts=4, base="0.1s", cap="0.4s", jitter=True)
    job = q.submit(flaky, str(tmp_path / "c"), 3, retry=r)
    assert job.result(timeout=60) == 4
    planned = [float(re.match(r"in ([\d.]+) s", d).group(1)) for _, k, d in job.events if k == "retrying"]
    assert len(planned) == 3
    for n, (p, t_fail, t_next) in enumerate(zip(planned, when(job, "failed"), when(job, "running")[1:],
                                                strict=True), start=1):
        assert 0 <= p <= r.ceiling(n) + 1e-3
        assert t_next - t_fail >= p - 1e-3


def test_exhausted_job_lands_in_dead_letters_and_requeue_after_fix_succeeds(queue, tmp_path):
    q = queue()
    flag = tmp_path / "broken"
    flag.touch()
    job = q.submit(broken_while, str(flag), str(tmp_path / "c"), owner="ann",
                   retry=Retry(attempts=3, base="0.02s", cap="0.05s"))
    with pytest.raises(RuntimeError, match="broken"):
        job.result(timeout=60)
    assert job.status == "dead" and job.attempts == 3 and ncalls(tmp_path / "c") == 3
    (dl,) = q.dead_letters()
    assert dl.id == job.id and dl.owner == "ann" and dl.attempts == 3
    assert "RuntimeError: broken" in dl.traceback and "broken_while" in dl.traceback
    assert q.stats()["dead_letters"] == 1
    flag.unlink()  # the fix
    again = q.requeue(job.id)
    assert again is job
    assert job.result(timeout=60) == "fixed"
    assert job.attempts == 1 and q.dead_letters() == []
    kinds = [k for _, k, _ in job.events]
    assert kinds.count("failed") == 3 and "dead" in kinds and kinds.index("requeued") < kinds.index("done")


def test_permanent_error_is_dead_at_once_and_unlisted_error_fails(queue, tmp_path):
    q = queue(retry=Retry(attempts=5, base="0.02s", on=(ConnectionError,), give_up_on=(PermissionError,)))
    perm = q.submit(flaky, str(tmp_path / "p"), 9, PermissionError)
    other = q.submit(flaky, str(tmp_path / "o"), 9, KeyError)
    q.wait(timeout=60)
    assert (perm.status, perm.attempts) == ("dead", 1)
    assert (other.status, other.attempts) == ("failed", 1)
    assert isinstance(other.exception(), KeyError)
    assert [j.id for j in q.dead_letters()] == [perm.id]


# -- circuit breaker and retry budget ---------------------------------------------------
def test_circuit_breaker_holds_then_probes_then_closes(queue, tmp_path):
    flag = tmp_path / "broken"
    flag.touch()
    q = queue(max_in_flight=1, breaker=CircuitBreaker(threshold=2, cooldown="1s"),
              retry=Retry(attempts=20, base="0.02s", cap="0.02s", jitter=False),
              retry_budget=RetryBudget(ratio=10, minimum=1000))
    jobs = [q.submit(broken_while, str(flag), str(tmp_path / "c")) for _ in range(4)]
    fn = jobs[0].fn_name

    def open_and_holding():
        s = q.stats()
        return s["breakers"].get(fn, {}).get("state") == "open" and s["held"].get(fn)

    until(open_and_holding, "the circuit opened and held jobs")
    assert all(j.status in ("queued", "retrying") for j in jobs)  # held, not failed
    flag.unlink()
    q.wait(jobs, timeout=60)
    assert all(j.result() == "fixed" for j in jobs)
    assert q.stats()["breakers"][fn]["state"] == "closed"
    kinds = [k for j in jobs for _, k, _ in j.events]
    assert "held" in kinds and "probe" in kinds and "released" in kinds
    transitions = q._engine.breakers[fn].transitions
    trans = [(a, b) for _, a, b in transitions]
    assert trans[0] == ("closed", "open") and ("open", "half-open") in trans and trans[-1] == (
        "half-open", "closed")
    # While open (from opening to the probe's half-open), nothing of the function starts,
    # and the probe waits out the whole cooldown.
    starts = [t for j in jobs for t in when(j, "running")]
    for t_open, t_probe in zip([t for t, _, b in transitions if b == "open"],
                               [t for t, _, b in transitions if b == "half-open"], strict=True):
        assert t_probe - t_open >= 1.0
        assert not [t for t in starts if t_open < t < t_probe]


def test_retry_budget_defers_retries_without_failing_them(queue, tmp_path):
    q = queue(retry_budget=RetryBudget(ratio=0.0, window="1s", minimum=1),
              retry=Retry(attempts=3, base="0.01s", cap="0.01s", jitter=False))
    jobs = [q.submit(flaky, str(tmp_path / f"c{i}"), 1) for i in range(3)]
    q.wait(jobs, timeout=60)
    assert [j.result() for j in jobs] == [2, 2, 2]
    assert any("retry-deferred" in [k for _, k, _ in j.events] for j in jobs)
    assert q.stats()["retry_budget"]["refused"] > 0


# -- policies on the cluster ------------------------------------------------------------
def _blocked(q, tmp_path):
    """Fill the queue's one slot; returns the blocker and the call that releases it
    (make it after ``q.flush()``: every job submitted before is queued by then)."""
    flag = tmp_path / "hold"
    flag.touch()
    blocker = q.submit(hold, str(flag), str(tmp_path / "blocker"))
    until(lambda: blocker.status == "running", "the blocker runs")
    return blocker, lambda: flag.unlink(missing_ok=True)


def test_fair_share_light_owner_finishes_long_before_heavy_one(queue, tmp_path):
    q = queue(policy="fair-share", max_in_flight=4)
    heavy = q.map(nap, [0.005] * 1000, owner="A")
    t0 = time.monotonic()
    while sum(j.status == "done" for j in heavy) < 20 and time.monotonic() - t0 < 60:
        time.sleep(0.01)
    light = q.map(nap, [0.005] * 20, owner="B")
    q.wait(timeout=180)
    b_last = max(when(j, "done")[0] for j in light)
    a_after = sum(when(j, "done")[0] > b_last for j in heavy)
    assert a_after >= 500, f"only {a_after} of A's jobs finished after B's last"


def timed_nap(seconds):
    """Sleep; return how long this call took, as the function itself measures it."""
    t0 = time.perf_counter()
    time.sleep(seconds)
    return time.perf_counter() - t0


def test_fair_share_charges_the_run_time_on_the_worker_not_the_wait_in_dask(queue, tmp_path):
    flag, started = tmp_path / "hold", tmp_path / "blockers"
    flag.touch()
    q = queue(policy=FairShare(half_life="1000d"))  # no decay worth the name during the test
    assert q.stats()["max_in_flight"] >= 3  # the job goes to Dask with the blockers
    blockers = [q.submit(hold, str(flag), str(started), owner="blocker") for _ in range(2)]
    until(lambda: ncalls(started) == 2, "both workers (one thread each) are held")
    job = q.submit(timed_nap, 0.2, owner="A")
    until(lambda: job.status == "running", "the job is handed to Dask")
    time.sleep(2.0)  # the job waits in Dask's queue, behind the blockers
    released = time.time()
    flag.unlink()
    ran = job.result(timeout=60)
    q.wait(blockers, timeout=60)
    waited = released - when(job, "running")[0]  # handed to Dask, not running yet
    charged = q.policy.usage(time.time())["A"]
    (done,) = [d for _, k, d in job.events if k == "done"]
    assert ran * 0.999 <= charged < waited  # its run time (the wrapper's clock encloses it), not the wait
    assert f"in {charged:.3f} s" in done


def test_earliest_deadline_first_and_late_jobs_are_flagged_not_dropped(queue, tmp_path):
    q = queue(policy="deadline", max_in_flight=1)
    _, release = _blocked(q, tmp_path)
    offsets = [40, 10, 30, 20, 50]
    jobs = [q.submit(nap, 0.01, deadline=f"{o}s") for o in offsets]
    late = q.submit(nap, 0.01, deadline="0.3s")
    q.flush()
    until(lambda: late.late, "the short deadline passed while the job waited")
    release()
    q.wait(timeout=60)
    order = sorted([*jobs, late], key=lambda j: when(j, "running")[0])
    assert order[0] is late
    assert [j.deadline for j in order[1:]] == sorted(j.deadline for j in jobs)
    assert late.late and late.status == "done" and "deadline-missed" in [k for _, k, _ in late.events]
    assert not any(j.late for j in jobs)


def test_priority_classes_run_high_first_and_set_dask_priority(queue, tmp_path):
    q = queue(policy="priority", max_in_flight=1)
    _, release = _blocked(q, tmp_path)
    lo = q.submit(nap, 0.01, priority="low")
    no = q.submit(nap, 0.01, priority="normal")
    hi = q.submit(nap, 0.01, priority="high")
    q.flush()
    release()
    q.wait(timeout=60)
    starts = [when(j, "running")[0] for j in (hi, no, lo)]
    assert starts == sorted(starts)


# -- cancel, keys, restart, CLI ---------------------------------------------------------
def test_cancel_queued_and_running_jobs(queue, tmp_path):
    q = queue(max_in_flight=1)
    blocker, release = _blocked(q, tmp_path)
    waiting = q.submit(nap, 0.01, str(tmp_path / "w"))
    q.flush()
    assert q.cancel(waiting.id) and waiting.status == "cancelled"
    assert q.cancel(blocker.id) and blocker.status == "cancelled"
    assert not q.cancel(waiting.id)
    after = q.submit(nap, 0.01)
    assert after.result(timeout=60) == 0.01
    release()  # the cancelled blocker's thread ran on until now
    assert ncalls(tmp_path / "w") == 0
    with pytest.raises(Exception, match="cancelled"):
        waiting.result()


def test_idempotent_keys_dead_letters_and_results_survive_a_restart(cluster, tmp_path):
    store = str(tmp_path / "q.db")
    flag = tmp_path / "broken"
    flag.touch()
    with JobQueue(cluster, store=store, retry=FAST) as q1:
        a = q1.submit(flaky, str(tmp_path / "k"), 0, key="only-once")
        assert q1.submit(flaky, str(tmp_path / "k"), 0, key="only-once") is a
        dead = q1.submit(broken_while, str(flag), str(tmp_path / "d"), owner="bob",
                         retry=Retry(attempts=2, base="0.01s"))
        q1.wait(timeout=60)
        assert a.result() == 1 and dead.status == "dead"
    with JobQueue(cluster, store=store, retry=FAST) as q2:
        again = q2.submit(flaky, str(tmp_path / "k"), 0, key="only-once")
        assert again.id == a.id and again.status == "done" and again.result() == 1
        assert ncalls(tmp_path / "k") == 1
        (dl,) = q2.dead_letters()
        assert (dl.id, dl.owner, dl.attempts) == (dead.id, "bob", 2)
        assert "RuntimeError" in dl.traceback and [k for _, k, _ in dl.events].count("failed") == 2
    # the CLI needs no cluster: list, requeue for the next resume()
    r = CliRunner().invoke(cli, ["queue", "ls", "--status", "dead", "--store", store])
    assert r.exit_code == 0 and dead.id in r.output and "RuntimeError" in r.output
    r = CliRunner().invoke(cli, ["queue", "stats", "--store", store])
    assert r.exit_code == 0 and re.search(r"dead\s+1", r.output) and re.search(r"done\s+1", r.output)
    r = CliRunner().invoke(cli, ["queue", "requeue", "nope", "--store", store])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(cli, ["queue", "requeue", dead.id, "--store", store])
    assert r.exit_code == 0, r.output
    flag.unlink()
    with JobQueue(cluster, store=store, retry=FAST).resume() as q3:
        (job,) = q3.jobs()
        assert job.id == dead.id and job.result(timeout=60) == "fixed"
    r = CliRunner().invoke(cli, ["queue", "stats", "--store", store])
    assert re.search(r"done\s+2", r.output) and re.search(r"dead\s+0", r.output)


def test_resume_after_killing_the_driver_runs_every_job_exactly_once(cluster, tmp_path):
    import signal
    import subprocess

    n, store, log, db = 60, str(tmp_path / "q.db"), str(tmp_path / "log"), str(tmp_path / "fx.db")
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE effects (key TEXT PRIMARY KEY)")
    con.commit()
    con.close()
    driver = os.path.join(TESTS, "queue_driver.py")
    p = subprocess.Popen([sys.executable, driver, store, log, db, str(n)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "submitted"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            done = sqlite3.connect(store, timeout=30).execute(
                "SELECT COUNT(*) FROM jobs WHERE status='done'").fetchone()[0]
            if done >= 15:
                break
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGKILL)  # the driver and its cluster's workers, mid-run
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    rows = sqlite3.connect(store).execute("SELECT key, status FROM jobs").fetchall()
    assert len(rows) == n
    done_before = {k for k, s in rows if s == "done"}
    assert 15 <= len(done_before) < n
    with JobQueue(cluster, store=store, max_in_flight=4).resume() as q:
        resumed = q.jobs()
        assert {j.key for j in resumed} == {k for k, s in rows if s != "done"}
        q.wait(timeout=120)
        assert all(j.status == "done" for j in resumed)
        assert q.submit(print, key="k0").status == "done"  # a done key never runs again
    lines = open(log).read().split()
    counts = {k: lines.count(k) for k in set(lines)}
    assert set(counts) == {f"k{i}" for i in range(n)}  # nothing lost
    assert all(counts[k] == 1 for k in done_before)  # recorded done: never ran again
    # Re-runs: a job may have run before the crash without its done record committing
    # (in flight, or finished with its result or record still on the way; a finished
    # job frees its slot at once, so that is not bounded by max_in_flight). What holds:
    # only jobs not recorded done ran again, and each at most once more.
    again = {k for k, c in counts.items() if c > 1}
    assert not again & done_before and all(c <= 2 for c in counts.values())
    effects = sqlite3.connect(db).execute("SELECT key FROM effects").fetchall()
    assert sorted(k for (k,) in effects) == sorted(f"k{i}" for i in range(n))  # exactly once


def query(store, sql):
    con = sqlite3.connect(store, timeout=30)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_a_job_retrying_when_the_driver_died_waits_out_its_backoff_after_resume(cluster, tmp_path):
    import signal
    import subprocess

    store, log, base = str(tmp_path / "q.db"), str(tmp_path / "log"), 4.0
    driver = os.path.join(TESTS, "queue_driver.py")
    p = subprocess.Popen([sys.executable, driver, "retry", store, log, f"{base}s"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "submitted"
        until(lambda: query(store, "SELECT status FROM jobs") == [("retrying",)], "the first attempt failed",
              timeout=120)
        os.killpg(p.pid, signal.SIGKILL)  # mid-backoff: the driver and its worker
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    ((attempts, next_attempt),) = query(store, "SELECT attempts, next_attempt FROM jobs")
    (first,) = [float(t) for t in open(log).read().split()]
    assert attempts == 1 and next_attempt >= first + base  # the end of its backoff is stored
    with JobQueue(cluster, store=store).resume() as q:
        (job,) = q.jobs()
        assert job.status == "retrying" and job.next_attempt == next_attempt
        assert job.result(timeout=120) == 2 and job.next_attempt is None  # only a retrying job has one
    first, second = [float(t) for t in open(log).read().split()]
    assert second >= next_attempt and second - first >= base  # not at once on resume()
    (resumed,) = [d for _, k, d in job.events if k == "resumed"]
    assert "at the end of its backoff" in resumed


def test_a_store_made_before_next_attempt_existed_is_read_and_migrated(cluster, tmp_path):
    store = str(tmp_path / "q.db")
    q1 = JobQueue(cluster, store=store, max_in_flight=1, retry=FAST)
    _, release = _blocked(q1, tmp_path)
    waiting = q1.submit(calls, str(tmp_path / "c"))
    q1.flush()
    q1.close()
    release()
    con = sqlite3.connect(store)
    con.execute("ALTER TABLE jobs DROP COLUMN next_attempt")  # the schema of an earlier packlab
    con.close()

    def columns():
        return [name for _, name, *_ in query(store, "PRAGMA table_info(jobs)")]

    reader = Store(store, mode="ro")  # a reader may not migrate: it reads no next attempt
    try:
        assert waiting.id in [j.id for j in reader.unfinished()]
    finally:
        reader.close()
    assert "next_attempt" not in columns()
    with JobQueue(cluster, store=store, retry=FAST).resume() as q2:
        assert "next_attempt" in columns()
        assert q2.get(waiting.id).result(timeout=60) == 1
        flaky_job = q2.submit(flaky, str(tmp_path / "f"), 1, retry=Retry(attempts=2, base="5s", jitter=False))
        sql = f"SELECT next_attempt FROM jobs WHERE id='{flaky_job.id}' AND status='retrying'"
        until(lambda: query(store, sql) not in ([], [(None,)]), "the flaky job's retry is recorded")
        ((t,),) = query(store, sql)
        assert t == flaky_job.next_attempt and t >= when(flaky_job, "failed")[0] + 5.0
        q2.cancel(flaky_job.id)


def test_submitting_the_key_of_a_crashed_runs_job_runs_it_and_get_waits_for_resume(cluster, tmp_path):
    store = str(tmp_path / "q.db")
    q1 = JobQueue(cluster, store=store, max_in_flight=1, retry=FAST)
    _, release = _blocked(q1, tmp_path)
    keyed = q1.submit(calls, str(tmp_path / "keyed"), key="left-over")
    plain = q1.submit(calls, str(tmp_path / "plain"))
    q1.flush()
    q1.close()  # like a crash: both stay queued in the store
    release()
    with JobQueue(cluster, store=store, retry=FAST) as q2:
        again = q2.submit(calls, str(tmp_path / "keyed"), key="left-over")
        assert again.id == keyed.id and again.result(timeout=60) == 1
        looked_up = q2.get(plain.id)
        with pytest.raises(PacklabError, match=r"nothing runs it .*resume\(\)"):
            q2.wait([looked_up], timeout=60)
        with pytest.raises(PacklabError, match="resume"):
            looked_up.result(timeout=60)
        q2.resume()
        assert looked_up.result(timeout=60) == 1  # the same object the user holds
        assert ncalls(tmp_path / "keyed") == 1 and ncalls(tmp_path / "plain") == 1
        assert "resumed" in [k for _, k, _ in looked_up.events]


def test_concurrent_requeues_of_one_job_run_it_once(queue, tmp_path):
    q = queue(retry=Retry(attempts=1))
    flag = tmp_path / "broken"
    flag.touch()
    job = q.submit(broken_while, str(flag), str(tmp_path / "c"))
    with pytest.raises(RuntimeError):
        job.result(timeout=60)
    flag.unlink()
    outcomes = race(lambda: q.requeue(job.id))
    assert sum(o is job for o in outcomes) == 1, outcomes
    assert all(re.search(r"only dead, failed or cancelled", str(o)) for o in outcomes if o is not job)
    assert job.result(timeout=60) == "fixed"
    assert ncalls(tmp_path / "c") == 2 and q.stats()["queued"] == 0
    assert q.submit(abs, -3).result(timeout=60) == 3  # the policy is consistent: the queue serves on


class Picky(FIFO):
    """A user policy with a bug for one owner: it raises while the loop handles a push."""

    name = "picky-test"

    def push(self, job):
        if job.owner == "bad":
            raise RuntimeError("picky policy refuses owner=bad")
        super().push(job)


def test_an_error_in_the_loop_spares_the_rest_of_its_batch_and_is_raised(queue, tmp_path):
    q = queue(policy=Picky())
    q.flush()
    other = sqlite3.connect(q.store, isolation_level=None, timeout=30)
    other.execute("BEGIN IMMEDIATE")  # hold the store's commits: the pushes then come in one batch
    good = [q.submit(abs, i) for i in range(-20, -10)]
    bad = q.submit(abs, -1, owner="bad")
    good += [q.submit(abs, i) for i in range(-10, 0)]
    other.execute("COMMIT")
    other.close()
    assert [g.result(timeout=60) for g in good] == list(range(20, 0, -1))
    assert bad.status == "queued"
    assert "push: RuntimeError: picky policy refuses owner=bad" in q.stats()["errors"]["loop"]
    with pytest.raises(QueueFailed, match=r"the queue's loop failed .*picky policy refuses"):
        q.wait(timeout=60)
    with pytest.raises(QueueFailed, match="the queue's loop failed"):
        q.submit(abs, -2)


def test_a_key_another_process_wrote_first_fails_only_that_job(queue, tmp_path):
    q = queue()
    q.flush()
    other = sqlite3.connect(q.store, isolation_level=None, timeout=30)  # "another process"
    other.execute("BEGIN IMMEDIATE")  # hold the write lock: the queue's commit waits
    dup = q.submit(calls, str(tmp_path / "dup"), key="dup")
    good = [q.submit(calls, str(tmp_path / f"g{i}")) for i in range(3)]
    other.execute("INSERT INTO jobs (id, seq, key, fn, status) VALUES ('other', -1, 'dup', 'x', 'done')")
    other.execute("COMMIT")
    other.close()
    with pytest.raises(PacklabError, match=r"writes failed: INSERT INTO jobs .*UNIQUE constraint failed"):
        q.flush()
    assert [g.result(timeout=60) for g in good] == [1, 1, 1]
    with pytest.raises(PacklabError, match=r"was not recorded, so it never runs.*key='dup'"):
        dup.result(timeout=60)
    assert dup.status == "failed" and ncalls(tmp_path / "dup") == 0
    q.flush()
    rows = dict(sqlite3.connect(q.store).execute("SELECT id, status FROM jobs").fetchall())
    assert {g.id: "done" for g in good}.items() <= rows.items() and dup.id not in rows
    assert q.stats()["errors"] == {"loop": None, "store": None}  # one bad row: the store is fine
    assert q.submit(calls, "unused", key="dup").id == "other"
    q.flush()


def test_a_plain_dask_cluster_gets_a_client_the_queue_closes(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as lc:
        q = JobQueue(lc, store=str(tmp_path / "q.db"))
        client = q.client
        assert q.submit(abs, -4).result(timeout=60) == 4
        q.close()
        assert client.status == "closed"


def test_completions_and_results_without_the_batched_callback(cluster):
    from packlab.queue import fetch

    client = cluster.client
    futs = [client.submit(abs, -5, pure=False), client.submit(lambda: 1 / 0, pure=False)]
    for batched in (False, True):
        posted = []
        fetch.watch(client, [(f"job{i}", i, f) for i, f in enumerate(futs)],
                    lambda job, tok, posted=posted: posted.append((job, tok)), batched=batched)
        until(lambda posted=posted: len(posted) == 2, f"both completions posted (batched={batched})")
        assert sorted(posted) == [("job0", 0), ("job1", 1)]
    (ok, five, _), (failed, err, tb) = fetch.gather(client, futs)  # the shared gather fails: one by one
    assert (ok, five, failed) == (True, 5, False)
    assert isinstance(err, ZeroDivisionError) and "ZeroDivisionError" in tb


def test_completions_post_each_finished_erred_or_cancelled_attempt_once(cluster):
    """Futures added in several hand-overs, before and after the watcher went to sleep
    with nothing to watch, are each posted once: finished, erred and cancelled alike."""
    import threading

    from distributed import Event

    from packlab.queue import fetch

    client = cluster.client
    posted, lock = [], threading.Lock()

    def post(items):
        with lock:
            posted.extend(items)

    c = fetch.Completions(client, post)
    try:
        first = client.map(abs, range(-20, 0), pure=False)
        c.add([(f"a{i}", i, f) for i, f in enumerate(first)])
        until(lambda: len(posted) == 20, "the first hand-over posted")
        time.sleep(0.1)  # nothing left to watch: the watcher sleeps until the next add
        gate = Event(f"gate-{time.time_ns()}", client=client)
        blocked = client.submit(gate.wait, 60, pure=False)
        erred = client.submit(lambda: 1 / 0, pure=False)
        c.add([("blocked", 0, blocked), ("erred", 0, erred)])
        until(lambda: ("erred", 0) in posted, "the erred attempt posted")
        assert ("blocked", 0) not in posted  # still running
        client.cancel([blocked])
        until(lambda: ("blocked", 0) in posted, "the cancelled attempt posted")
        time.sleep(0.1)
        assert sorted(posted) == sorted([(f"a{i}", i) for i in range(20)] + [("erred", 0), ("blocked", 0)])
        gate.set()
    finally:
        c.close()


def test_store_loads_more_jobs_than_sqlite_binds_variables(tmp_path):
    s = Store(str(tmp_path / "q.db"))
    # Builds differ (32766 by default, far more in some): use the historic 999 here.
    s._con.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    n = 5000
    with s._lock:
        s._con.executemany("INSERT INTO jobs (id, seq, fn, status) VALUES (?, ?, 'f', 'queued')",
                           [(f"j{i}", i) for i in range(n)])
        s._con.execute("INSERT INTO events VALUES ('j7', 1.0, 'submitted', '')")
    try:
        assert len(s.unfinished()) == n
        jobs = s.load([f"j{i}" for i in range(n)])
        assert [j.seq for j in jobs] == list(range(n)) and jobs[7].events == [(1.0, "submitted", "")]
        assert [j.id for j in s.load([f"j{i}" for i in range(n)], limit=2)] == ["j0", "j1"]
    finally:
        s.close()


def test_cli_reads_without_unpickling_and_never_creates_a_store(tmp_path):
    import pickle
    import types

    mod = types.ModuleType("packlab_gone_module")
    exec("class Gone:\n    pass", mod.__dict__)
    sys.modules[mod.__name__] = mod
    try:
        blob = pickle.dumps(mod.Gone())
    finally:
        del sys.modules[mod.__name__]
    store = str(tmp_path / "q.db")
    Store(store).close()
    con = sqlite3.connect(store)
    con.execute("INSERT INTO jobs (id, seq, fn, status, attempts, submitted, retry, result, has_result) "
                "VALUES ('j1', 0, 'mod.make', 'done', 1, 0, ?, ?, 1)", (blob, blob))
    con.commit()
    con.close()
    r = CliRunner().invoke(cli, ["queue", "ls", "--store", store])
    assert r.exit_code == 0, r.output
    assert "j1" in r.output and "mod.make" in r.output
    typo = str(tmp_path / "qq.db")
    for args in (["stats"], ["ls"], ["requeue", "j1"]):
        r = CliRunner().invoke(cli, ["queue", *args, "--store", typo])
        assert r.exit_code == 2 and "no queue store at" in r.output and "qq.db" in r.output, r.output
    assert not os.path.exists(typo)


# -- bad input --------------------------------------------------------------------------
def test_bad_input_gets_clear_errors(queue, cluster, tmp_path):
    q = queue()
    with pytest.raises(PacklabError, match=r"priority='urgent' is invalid: expected one of \['high'"):
        q.submit(abs, 1, priority="urgent")
    with pytest.raises(PacklabError, match="policy='lifo' is unknown"):
        JobQueue(cluster, policy="lifo", store=str(tmp_path / "x.db"))
    with pytest.raises(PacklabError, match="timeout=-1 is invalid"):
        q.submit(abs, 1, timeout=-1)
    with pytest.raises(PacklabError, match="timeout='soon' is invalid"):
        q.submit(abs, 1, timeout="soon")
    with pytest.raises(PacklabError, match=r"deadline=.* is invalid: expected a time in the future"):
        q.submit(abs, 1, deadline=dt.datetime.now() - dt.timedelta(minutes=1))
    lock = threading.Lock()
    with pytest.raises(PacklabError, match=r"args\[1\] \(a _thread.lock\) cannot be pickled"):
        q.submit(max, 1, lock)
    with pytest.raises(PacklabError, match=r"kwargs\['key_fn'\] .* cannot be pickled"):
        q.submit(sorted, [1], key_fn=lock)
    with pytest.raises(PacklabError, match=r"the function .* cannot be pickled"):
        q.submit(lambda: lock)
    with pytest.raises(PacklabError, match=r"store=.* cannot be used|not writable|does not exist"):
        JobQueue(cluster, store="/proc/packlab-q.db")
    with pytest.raises(PacklabError, match="does not exist"):
        JobQueue(cluster, store=str(tmp_path / "no" / "such" / "q.db"))
    with pytest.raises(PacklabError, match="store='postgresql://h/db' is not supported"):
        JobQueue(cluster, store="postgresql://h/db")
    with pytest.raises(PacklabError, match="job id 'nope' does not exist"):
        q.requeue("nope")
    with pytest.raises(PacklabError, match="job id 'nope' does not exist"):
        q.cancel("nope")
    done = q.submit(abs, -1)
    done.result(timeout=60)
    with pytest.raises(PacklabError, match="is done: only dead, failed or cancelled"):
        q.requeue(done.id)
    with pytest.raises(PacklabError, match="max_in_flight=0 is invalid"):
        JobQueue(cluster, max_in_flight=0, store=str(tmp_path / "y.db"))


# -- lost workers, scaling and timeouts (last: they leave busy threads behind) -----------
def test_killed_worker_is_transient_and_in_flight_follows_scaling(tmp_path):
    import signal

    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        pc = small_cluster()
    with pc, JobQueue(pc, store=str(tmp_path / "q.db"), retry=FAST) as q:
        assert q.stats()["max_in_flight"] == 2 * packlab.config.get("queue.in-flight-factor")
        pidfile = tmp_path / "pid"
        job = q.submit(_pid_then_nap, str(pidfile), 3.0)
        t0 = time.monotonic()
        while not pidfile.exists() and time.monotonic() - t0 < 60:
            time.sleep(0.01)
        time.sleep(0.1)
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        assert job.result(timeout=120) == "ok"
        assert job.attempts == 2
        assert any("KilledWorker" in d for _, k, d in job.events if k == "failed")
        pc.scale(3)
        pc.wait_for_workers(3, timeout=60)
        t0 = time.monotonic()
        while q.stats()["max_in_flight"] != 3 * packlab.config.get("queue.in-flight-factor"):
            assert time.monotonic() - t0 < 30
            time.sleep(0.1)


def _pid_then_nap(path, seconds):
    first = not os.path.exists(path)
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    if first:
        time.sleep(seconds)
    return "ok"


def _slow_load(value, seconds):
    time.sleep(seconds)
    return value


class SlowToLoad:
    """A result that takes ``seconds`` to unpickle on the client: a long fetch."""

    def __init__(self, value, seconds):
        self.value, self.seconds = value, seconds

    def __reduce__(self):
        return _slow_load, (self.value, self.seconds)


def slow_result(path, value, seconds):
    calls(path)
    return SlowToLoad(value, seconds)


def test_a_job_that_finished_is_not_timed_out_while_its_result_is_fetched(queue, tmp_path):
    q = queue()
    job = q.submit(slow_result, str(tmp_path / "c"), 7, 1.5, timeout=0.5)
    assert job.result(timeout=60) == 7
    assert job.attempts == 1 and ncalls(tmp_path / "c") == 1
    assert "failed" not in [k for _, k, _ in job.events]
    assert q.stats()["breakers"] == {}  # no failure was counted


def test_timeout_fails_the_attempt_and_retries(queue, tmp_path):
    q = queue()
    job = q.submit(_slow_first, str(tmp_path / "c"), 1.5, timeout=0.5)
    assert job.result(timeout=60) == "fast"
    assert job.attempts >= 2
    first = next(d for _, k, d in job.events if k == "failed")
    assert "JobTimeout" in first and "timeout of 0.5 s" in first
    always = q.submit(nap, 1.0, timeout="0.3s", retry=Retry(attempts=2, base="0.01s"))
    with pytest.raises(JobTimeout):
        always.result(timeout=60)
    assert always.status == "dead" and always.attempts == 2


def _slow_first(path, seconds):
    if calls(path) == 1:
        time.sleep(seconds)
    return "fast"


def test_waiting_on_a_job_of_a_closed_queue_says_so(queue, tmp_path):
    q = queue(max_in_flight=1)
    _, release = _blocked(q, tmp_path)
    waiting = q.submit(nap, 0.01)
    q.close()
    try:
        assert waiting.status == "queued"
        with pytest.raises(QueueClosed, match=r"its queue is closed: open .*resume"):
            waiting.result(timeout=10)
        with pytest.raises(QueueClosed, match=r"2 of 2 jobs are not finished and the queue is closed"):
            q.wait(timeout=10)
    finally:
        release()
