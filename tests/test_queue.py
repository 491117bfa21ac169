"""JobQueue on a real LocalCluster with real failures: retries, DLQ, breaker, budget,
policies, idempotent keys, restart, CLI, bad input. Timeout tests come last: a timed-out
function keeps its worker thread busy until it returns."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import threading
import time
import warnings

import cloudpickle
import pytest
from click.testing import CliRunner

import packlab
from packlab.cli import main as cli
from packlab.errors import PacklabError
from packlab.queue import CircuitBreaker, JobQueue, JobTimeout, Retry, RetryBudget

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


def ncalls(path) -> int:
    return sum(1 for _ in open(path)) if os.path.exists(path) else 0


def when(job, kind):
    return [t for t, k, _ in job.events if k == kind]


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=2, cores=1, memory="1GiB", wait=True)
    with pc:
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
    seen = set()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        b = q.stats()["breakers"].get(fn, {})
        seen.add(b.get("state"))
        if b.get("state") == "open" and q.stats()["held"].get(fn):
            break
        time.sleep(0.02)
    assert "open" in seen
    calls_when_open = ncalls(tmp_path / "c")
    time.sleep(0.5)  # inside the cooldown nothing of this function runs
    assert ncalls(tmp_path / "c") == calls_when_open
    assert all(j.status in ("queued", "retrying") for j in jobs)  # held, not failed
    flag.unlink()
    q.wait(jobs, timeout=60)
    assert all(j.result() == "fixed" for j in jobs)
    assert q.stats()["breakers"][fn]["state"] == "closed"
    kinds = [k for j in jobs for _, k, _ in j.events]
    assert "held" in kinds and "probe" in kinds and "released" in kinds
    trans = [(a, b) for _, a, b in q._engine.breakers[fn].transitions]
    assert trans[0] == ("closed", "open") and ("open", "half-open") in trans and trans[-1] == (
        "half-open", "closed")


def test_retry_budget_defers_retries_without_failing_them(queue, tmp_path):
    q = queue(retry_budget=RetryBudget(ratio=0.0, window="1s", minimum=1),
              retry=Retry(attempts=3, base="0.01s", cap="0.01s", jitter=False))
    jobs = [q.submit(flaky, str(tmp_path / f"c{i}"), 1) for i in range(3)]
    q.wait(jobs, timeout=60)
    assert [j.result() for j in jobs] == [2, 2, 2]
    assert any("retry-deferred" in [k for _, k, _ in j.events] for j in jobs)
    assert q.stats()["retry_budget"]["refused"] > 0


# -- policies on the cluster ------------------------------------------------------------
def _blocked(q, seconds, tmp_path):
    blocker = q.submit(nap, seconds, str(tmp_path / "blocker"))
    t0 = time.monotonic()
    while blocker.status != "running" and time.monotonic() - t0 < 30:
        time.sleep(0.01)
    return blocker


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


def test_earliest_deadline_first_and_late_jobs_are_flagged_not_dropped(queue, tmp_path):
    q = queue(policy="deadline", max_in_flight=1)
    _blocked(q, 1.0, tmp_path)
    offsets = [40, 10, 30, 20, 50]
    jobs = [q.submit(nap, 0.01, deadline=f"{o}s") for o in offsets]
    late = q.submit(nap, 0.01, deadline="0.3s")
    q.wait(timeout=60)
    order = sorted([*jobs, late], key=lambda j: when(j, "running")[0])
    assert order[0] is late
    assert [j.deadline for j in order[1:]] == sorted(j.deadline for j in jobs)
    assert late.late and late.status == "done" and "deadline-missed" in [k for _, k, _ in late.events]
    assert not any(j.late for j in jobs)


def test_priority_classes_run_high_first_and_set_dask_priority(queue, tmp_path):
    q = queue(policy="priority", max_in_flight=1)
    _blocked(q, 0.8, tmp_path)
    lo = q.submit(nap, 0.01, priority="low")
    no = q.submit(nap, 0.01, priority="normal")
    hi = q.submit(nap, 0.01, priority="high")
    q.wait(timeout=60)
    starts = [when(j, "running")[0] for j in (hi, no, lo)]
    assert starts == sorted(starts)


# -- cancel, keys, restart, CLI ---------------------------------------------------------
def test_cancel_queued_and_running_jobs(queue, tmp_path):
    q = queue(max_in_flight=1)
    blocker = _blocked(q, 1.0, tmp_path)
    waiting = q.submit(nap, 0.01, str(tmp_path / "w"))
    q.flush()
    assert q.cancel(waiting.id) and waiting.status == "cancelled"
    assert q.cancel(blocker.id) and blocker.status == "cancelled"
    assert not q.cancel(waiting.id)
    after = q.submit(nap, 0.01)
    assert after.result(timeout=60) == 0.01
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
    import sqlite3
    import subprocess

    n, store, log, db = 60, str(tmp_path / "q.db"), str(tmp_path / "log"), str(tmp_path / "fx.db")
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE effects (key TEXT PRIMARY KEY)")
    con.commit()
    con.close()
    driver = os.path.join(os.path.dirname(__file__), "queue_driver.py")
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
    assert sum(c - 1 for c in counts.values()) <= 4  # re-runs: only jobs in flight at the crash
    effects = sqlite3.connect(db).execute("SELECT key FROM effects").fetchall()
    assert sorted(k for (k,) in effects) == sorted(f"k{i}" for i in range(n))  # exactly once


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

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=2, cores=1, memory="1GiB", wait=True)
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
    _blocked(q, 0.5, tmp_path)
    waiting = q.submit(nap, 0.01)
    q.close()
    assert waiting.status == "queued"
    with pytest.raises(PacklabError, match=r"its queue is closed: open .*resume"):
        waiting.result(timeout=10)
