"""One live driver per store: the lease, on a real LocalCluster and real SQLite, with real
driver processes (killed with SIGKILL, stopped with SIGSTOP)."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import cloudpickle
import dask
import pytest
from click.testing import CliRunner
from distributed.diagnostics.plugin import SchedulerPlugin
from support import race, small_cluster

from packlab.cli import main as cli
from packlab.errors import LeaseError, PacklabError, QueueClosed
from packlab.queue import JobQueue

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# A driver process: a JobQueue on a cluster with no workers (its jobs never run there),
# N jobs submitted, then it holds the store until its stdin closes. "submit" on stdin
# tries one more job and says what happened.
HOLDER = r"""
import sys, warnings
from distributed import LocalCluster
import packlab

def effect(key, log):
    with open(log, "a") as f:
        f.write(key + "\n")
    return key

store, log, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
warnings.simplefilter("ignore")
with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as lc:
    q = packlab.JobQueue(lc, store=store)
    for i in range(n):
        q.submit(effect, f"k{i}", log, key=f"k{i}")
    q.flush()
    print("holding", flush=True)
    for line in sys.stdin:
        try:
            q.submit(effect, "late", log)
            q.flush()
            print("submitted", flush=True)
        except packlab.errors.LeaseError as e:
            print("refused:", e, flush=True)
    q.close()
"""


def effect(key, log):
    with open(log, "a") as f:
        f.write(key + "\n")
    return key


def hold(flag, log):
    """Occupy a worker until the test removes ``flag`` (fails loudly after 60 s)."""
    effect("hold", log)
    t0 = time.monotonic()
    while os.path.exists(flag):
        if time.monotonic() - t0 > 60:
            raise TimeoutError(f"{flag} was never removed")
        time.sleep(0.005)
    return "released"


@pytest.fixture(scope="module")
def cluster():
    with small_cluster() as pc:
        yield pc


@pytest.fixture
def holder(tmp_path):
    """Start driver processes; each is killed (and continued first) at the end."""
    procs = []

    def start(store, n=0, lease_timeout=None):
        env = dict(os.environ)
        if lease_timeout is not None:
            env["DASK_PACKLAB__QUEUE__LEASE_TIMEOUT"] = lease_timeout
        p = subprocess.Popen([sys.executable, "-c", HOLDER, store, str(tmp_path / "log"), str(n)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, start_new_session=True, env=env)
        procs.append(p)
        assert p.stdout.readline().strip() == "holding"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGCONT)
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)


def lease_row(store):
    con = sqlite3.connect(store, timeout=30)
    try:
        return con.execute("SELECT driver, pid, host, started, heartbeat FROM lease").fetchone()
    finally:
        con.close()


def lease_threads():
    return sum(t.name == "packlab-queue-lease" for t in threading.enumerate())


def test_a_second_queue_in_this_process_is_refused_until_the_first_closes(cluster, tmp_path):
    store = str(tmp_path / "q.db")
    q1 = JobQueue(cluster, store=store)
    try:
        threads = lease_threads()
        with pytest.raises(LeaseError) as err:
            JobQueue(cluster, store=store)
        msg = str(err.value)
        assert f"store {store} is driven by another JobQueue" in msg
        assert f"pid {os.getpid()} on host {socket.gethostname()} (this process" in msg
        assert re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d, last heartbeat [\d.]+ s ago", msg)
        assert "Close the other queue, or wait" in msg and "after 30 s" in msg and "take_over=True" in msg
        assert lease_threads() == threads  # the refused queue left nothing running
        assert q1.submit(abs, -7).result(timeout=60) == 7  # and did not disturb the holder
    finally:
        q1.close()
    assert lease_row(store) is None  # close() released it
    with JobQueue(cluster, store=store) as q2:
        assert lease_row(store)[1] == os.getpid()
        assert q2.submit(abs, -8).result(timeout=60) == 8


def test_of_concurrent_openers_exactly_one_wins(cluster, tmp_path):
    store = str(tmp_path / "q.db")
    JobQueue(cluster, store=store).close()  # the schema exists: the openers race on the lease only
    outcomes = race(lambda: JobQueue(cluster, store=store))
    won = [o for o in outcomes if isinstance(o, JobQueue)]
    refused = [o for o in outcomes if isinstance(o, LeaseError)]
    try:
        assert len(won) == 1 and len(refused) == 3, refused
        assert lease_row(store)[0] == won[0]._lease.driver
    finally:
        for q in won:
            q.close()


def test_a_driver_in_another_process_is_refused_and_the_cli_reads_meanwhile(cluster, tmp_path, holder):
    store = str(tmp_path / "q.db")
    p = holder(store, n=3)
    with pytest.raises(LeaseError, match=rf"pid {p.pid} on host {re.escape(socket.gethostname())}, since"):
        JobQueue(cluster, store=store)
    r = CliRunner().invoke(cli, ["queue", "stats", "--store", store])
    assert r.exit_code == 0 and re.search(r"total\s+3", r.output), r.output
    r = CliRunner().invoke(cli, ["queue", "ls", "--store", store])
    assert r.exit_code == 0 and r.output.count("effect") == 3, r.output
    p.stdin.close()  # the holder closes its queue and exits
    assert p.wait(timeout=60) == 0
    with JobQueue(cluster, store=store) as q:
        assert lease_row(store)[1] == os.getpid()
        assert q.submit(abs, -1).result(timeout=60) == 1


def test_a_killed_driver_is_taken_over_at_once_and_resume_runs_each_job_once(cluster, tmp_path, holder,
                                                                              caplog):
    store, log = str(tmp_path / "q.db"), str(tmp_path / "log")
    p = holder(store, n=5)
    assert lease_row(store)[1] == p.pid
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    # A one-hour timeout: only "its pid is gone" can explain taking the lease over now.
    with dask.config.set({"packlab.queue.lease-timeout": "1h"}), caplog.at_level(logging.WARNING,
                                                                                  "packlab.queue"):
        with JobQueue(cluster, store=store).resume() as q:
            assert f"from pid {p.pid}" in caplog.text and "its process is gone" in caplog.text
            jobs = q.jobs()
            assert sorted(j.key for j in jobs) == [f"k{i}" for i in range(5)]
            q.wait(timeout=120)
            assert [j.result() for j in jobs] == [j.key for j in jobs]
    lines = open(log).read().split()
    assert sorted(lines) == [f"k{i}" for i in range(5)]  # each ran exactly once: none ran in the holder


def test_a_silent_driver_is_taken_over_after_the_timeout_and_not_before(cluster, tmp_path, holder):
    store = str(tmp_path / "q.db")
    p = holder(store, lease_timeout="2s")  # it beats every 0.4 s
    first = lease_row(store)[4]
    t0 = time.monotonic()
    while lease_row(store)[4] == first:
        assert time.monotonic() - t0 < 60, "the holder never refreshed its heartbeat"
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGSTOP)  # alive, but silent
    try:
        while open(f"/proc/{p.pid}/stat").read().rpartition(")")[2].split()[0] != "T":
            time.sleep(0.01)  # stopped for sure: no heartbeat lands after the one we read
        beat = lease_row(store)[4]
        with dask.config.set({"packlab.queue.lease-timeout": "1h"}):  # far from stale: refused
            with pytest.raises(LeaseError, match=f"pid {p.pid}"):
                JobQueue(cluster, store=store)
        with dask.config.set({"packlab.queue.lease-timeout": "2s"}):
            while True:
                before = time.time()
                try:
                    q = JobQueue(cluster, store=store)
                    break
                except LeaseError as e:
                    assert "driven by another JobQueue" in str(e)
                    assert before - beat <= 2.0  # refused only while the heartbeat was fresh
                    time.sleep(0.1)
            assert time.time() - beat > 2.0  # taken over only once it was stale
        assert lease_row(store)[0] == q._lease.driver
    finally:
        os.killpg(p.pid, signal.SIGCONT)
    try:
        # The woken driver has lost the lease: it may not write a job, and leaves ours alone.
        p.stdin.write("submit\n")
        p.stdin.flush()
        out = p.stdout.readline()
        assert out.startswith("refused:") and "took over this queue's driver lease" in out, out
        p.stdin.close()
        assert p.wait(timeout=60) == 0
        assert lease_row(store)[0] == q._lease.driver
        assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
        assert q.submit(abs, -2).result(timeout=60) == 2
    finally:
        q.close()


def test_take_over_true_takes_the_store_and_the_old_queue_stops(cluster, tmp_path):
    store = str(tmp_path / "q.db")
    with pytest.raises(PacklabError, match="take_over='yes' is invalid"):
        JobQueue(cluster, store=store, take_over="yes")
    old = JobQueue(cluster, store=store)
    new = JobQueue(cluster, store=store, take_over=True)
    try:
        assert lease_row(store)[0] == new._lease.driver
        job = old.submit(effect, "old", str(tmp_path / "log"))
        with pytest.raises(LeaseError, match="another JobQueue took over this queue's driver lease"):
            old.flush()
        with pytest.raises(QueueClosed, match="queued and its queue is closed"):
            job.result(timeout=60)  # the old queue stopped before it could run it
        with pytest.raises(LeaseError, match="took over this queue's driver lease"):
            old.submit(abs, -1)
        with pytest.raises(LeaseError, match="took over this queue's driver lease"):
            old.wait(timeout=60)
        with pytest.raises(LeaseError, match="took over this queue's driver lease"):
            old.cancel(job.id)
        old.close()
        assert lease_row(store)[0] == new._lease.driver  # closing the old one spared the new lease
        assert new.submit(abs, -3).result(timeout=60) == 3
        assert not os.path.exists(tmp_path / "log")  # the old queue's job never ran
    finally:
        old.close()
        new.close()


def test_a_queue_that_lost_its_lease_dispatches_nothing_more(cluster, tmp_path):
    store, log, flag = str(tmp_path / "q.db"), str(tmp_path / "log"), tmp_path / "flag"
    flag.touch()
    with dask.config.set({"packlab.queue.lease-timeout": "1s"}):  # it notices within 0.2 s
        old = JobQueue(cluster, store=store, max_in_flight=1)
    try:
        blocker = old.submit(hold, str(flag), log)
        queued = old.map(effect, [f"k{i}" for i in range(5)], log=log)
        until = time.monotonic() + 60
        while not os.path.exists(log):  # the blocker runs on a worker
            assert time.monotonic() < until, "the blocker never started"
            time.sleep(0.01)
        with JobQueue(cluster, store=store, take_over=True).resume() as new:
            while not old._lease.lost:  # its heartbeat finds the new driver's row
                assert time.monotonic() < until, "the old queue never noticed the take-over"
                time.sleep(0.01)
            flag.unlink()  # the old queue's slot frees: it must not fill it
            jobs = new.wait([j.id for j in [blocker, *queued]], timeout=120)
            assert [j.result() for j in jobs[1:]] == [f"k{i}" for i in range(5)]
        lines = open(log).read().split()
        # The blocker was running at the take-over: it runs again (at least once); the
        # queued jobs ran once, in the new queue only.
        assert sorted(lines) == ["hold", "hold", *[f"k{i}" for i in range(5)]]
    finally:
        flag.unlink(missing_ok=True)
        old.close()


class KeysSeen(SchedulerPlugin):
    """Records the key of every task the scheduler is given (public plugin API)."""

    name = "packlab-test-keys-seen"

    def __init__(self):
        self.keys = set()

    def transition(self, key, start, finish, *args, **kwargs):
        self.keys.add(str(key))


def scheduler_saw(client, fragment):
    """Whether the scheduler ever had a task whose key contains ``fragment`` (since
    :class:`KeysSeen` was registered). Ask after a round trip of this client's own: what
    it sent before has reached the scheduler."""
    client.submit(abs, -1, pure=False).result(timeout=60)
    return client.run_on_scheduler(
        lambda dask_scheduler: any(fragment in k for k in dask_scheduler.plugins[KeysSeen.name].keys))


def test_a_queue_that_lost_its_lease_hands_nothing_to_dask_before_it_notices(cluster, tmp_path):
    store, log, flag = str(tmp_path / "q.db"), str(tmp_path / "log"), tmp_path / "flag"
    flag.touch()
    cluster.client.register_plugin(KeysSeen())
    with dask.config.set({"packlab.queue.lease-timeout": "1h"}):  # no heartbeat during this test
        old = JobQueue(cluster, store=store, max_in_flight=1)
    try:
        old.submit(hold, str(flag), log)
        queued = old.submit(effect, "queued", log)
        old.flush()
        until = time.monotonic() + 60
        while not os.path.exists(log):  # the blocker runs on a worker; the other job waits
            assert time.monotonic() < until, "the blocker never started"
            time.sleep(0.01)
        with JobQueue(cluster, store=store, take_over=True) as new:
            assert not old._lease.lost  # taken between two heartbeats: the old queue has no idea
            flag.unlink()  # its slot frees, and its loop would fill it with the queued job
            while not old._lease.lost:  # it notices on its next store write
                assert time.monotonic() < until, "the old queue never noticed the take-over"
                time.sleep(0.01)
            assert not scheduler_saw(cluster.client, f"-packlab-{queued.id}-")  # never handed to Dask
            assert queued.status == "queued" and old.stats()["in_flight"] == 0
            new.resume().wait(timeout=120)
            assert new.get(queued.id).result() == "queued"
        # The blocker was running at the take-over: it runs again (at least once); the
        # queued job ran once, in the new queue.
        assert sorted(open(log).read().split()) == ["hold", "hold", "queued"]
    finally:
        flag.unlink(missing_ok=True)
        old.close()
