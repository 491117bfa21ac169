"""The queue's store on a shared machine and against files that are not ours; the
fencing token on the worker side; the event hook and the CLI's requests, on a real
LocalCluster, real SQLite and real files."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import time

import cloudpickle
import dask
import pytest
from click.testing import CliRunner
from support import small_cluster

from packlab.cli import main as cli
from packlab.errors import LeaseError, PacklabError
from packlab.files import private_directory
from packlab.queue import Job, JobQueue, Kind, Store
from packlab.queue.payload import run_fenced

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    with small_cluster() as pc:
        yield pc


def effect(path, key):
    with open(path, "a") as f:
        f.write(key + "\n")
    return key


def digest(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- files that are not a packlab store ---------------------------------------------------
def _unrelated(path):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE birds (name TEXT, wingspan REAL)")
    con.execute("INSERT INTO birds VALUES ('heron', 1.8)")
    con.commit()
    con.close()


def _their_jobs(path):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE jobs (title TEXT, salary INTEGER)")
    con.execute("CREATE TABLE events (what TEXT)")
    con.commit()
    con.close()


def _garbage(path):
    with open(path, "wb") as f:
        f.write(os.urandom(4096))


def _other_app(path):
    con = sqlite3.connect(path)
    con.execute("PRAGMA application_id = 1234")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()


NOT_OURS = {
    "unrelated": (_unrelated, r"is an SQLite database that is not a packlab store \(tables: birds\)"),
    "their-jobs": (_their_jobs,
                   r"whose 'jobs' table is not a packlab queue's \(columns \['salary', 'title'\]\)"),
    "garbage": (_garbage, r"is not an SQLite database"),
    "other-app": (_other_app, r"database of another application \(application_id 0x4d2\)"),
}


@pytest.mark.parametrize("name", sorted(NOT_OURS))
def test_a_file_that_is_not_a_store_is_refused_without_changing_a_byte(cluster, tmp_path, name):
    make, what = NOT_OURS[name]
    path = str(tmp_path / "x.db")
    make(path)
    before = digest(path)
    openers = (lambda: JobQueue(cluster, store=path), lambda: Store(path), lambda: Store(path, mode="ro"))
    for opener in openers:
        with pytest.raises(PacklabError, match=what) as err:
            opener()
        msg = str(err.value)
        assert "packlab left it unchanged" in msg and "Pass store= a new file name" in msg
        assert err.value.field == "store"
    r = CliRunner().invoke(cli, ["queue", "ls", "--store", path])
    assert r.exit_code == 2 and "--store=" in r.output and "Traceback" not in r.output, r.output
    assert digest(path) == before
    assert sorted(os.listdir(tmp_path)) == ["x.db"]  # no -wal, -shm or journal left behind
    if name != "garbage":
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
        con.close()


def test_a_read_only_store_is_refused_for_a_writer_and_read_by_the_cli(cluster, tmp_path):
    path = str(tmp_path / "q.db")
    Store(path).close()
    os.chmod(path, 0o400)
    # root ignores file modes (CI and the test SLURM run as root): there the file is made
    # immutable, which root cannot write either.
    immutable = os.access(path, os.W_OK)
    if immutable:
        subprocess.run(["chattr", "+i", path], check=True)
    before = digest(path)
    try:
        assert not os.access(path, os.W_OK)
        with pytest.raises(PacklabError, match="is not writable, and a queue writes to its store"):
            JobQueue(cluster, store=path)
        assert digest(path) == before
        r = CliRunner().invoke(cli, ["queue", "stats", "--store", path])
        assert r.exit_code == 0, r.output
        assert digest(path) == before
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", path], check=True)
        os.chmod(path, 0o600)


def test_a_failed_constructor_leaves_no_new_store_behind(tmp_path):
    path = tmp_path / "q.db"
    with pytest.raises(PacklabError, match="cluster_or_client=42 is invalid"):
        JobQueue(42, store=str(path))
    assert not os.path.exists(path) and os.listdir(tmp_path) == []


# -- owner-only files, no symlinks --------------------------------------------------------
def test_the_store_and_its_side_files_are_owner_only(cluster, tmp_path):
    old = os.umask(0o022)
    try:
        path = str(tmp_path / "q.db")
        with JobQueue(cluster, store=path) as q:
            assert q.submit(abs, -1).result(timeout=60) == 1
            for p in (path, path + "-wal", path + "-shm"):
                assert mode(p) == 0o600, p
        touched = str(tmp_path / "touched.db")
        open(touched, "w").close()
        os.chmod(touched, 0o644)
        Store(touched).close()  # an empty file made with touch becomes a store, owner-only
        assert mode(touched) == 0o600
        folder = private_directory(str(tmp_path / "home" / ".packlab"), "store")
        assert mode(folder) == 0o700
    finally:
        os.umask(old)


@pytest.mark.parametrize("points_at", ["a file of ours", "nowhere"])
@pytest.mark.parametrize("where", ["", "-wal", "-shm"])
def test_a_planted_symlink_is_never_followed(tmp_path, where, points_at):
    target = tmp_path / "victim"
    if points_at == "a file of ours":
        target.write_bytes(b"precious")
    path = str(tmp_path / "q.db")
    if where:
        Store(path).close()
        for side in ("-wal", "-shm"):
            if os.path.exists(path + side):
                os.unlink(path + side)
    os.symlink(target, path + where)
    with pytest.raises(PacklabError, match=r"has a symbolic link at .*packlab never follows one"):
        Store(path)
    if points_at == "nowhere":
        assert not os.path.lexists(target)  # nothing was created through the link
    else:
        assert target.read_bytes() == b"precious"
    with pytest.raises(PacklabError, match="is a symbolic link"):
        private_directory(path + where, "store")


# -- Python semantics ---------------------------------------------------------------------
def test_done_is_a_method_and_waits_take_durations(cluster, tmp_path):
    assert callable(Job.done) and not isinstance(Job.__dict__["done"], property)
    with JobQueue(cluster, store=str(tmp_path / "q.db")) as q:
        job = q.submit(abs, -3)
        assert job.result(timeout="1m") == 3 and job.done() is True
        assert q.wait(timeout="30s") == [job]
        with pytest.raises(PacklabError, match=r"timeout='soon' is invalid: expected a duration"):
            job.result(timeout="soon")
        with pytest.raises(PacklabError, match=r"status='bogus' is invalid: expected one of \['queued'"):
            q.jobs(status="bogus")


def test_subscribers_see_every_event_with_its_job_and_a_bad_one_breaks_nothing(cluster, tmp_path, caplog):
    with JobQueue(cluster, store=str(tmp_path / "q.db")) as q:
        seen = []
        q.subscribe(lambda ev: 1 / 0)
        stop = q.subscribe(seen.append, kinds=[Kind.SUBMITTED, Kind.RUNNING, Kind.DONE])
        job = q.submit(abs, -4, owner="ann", priority="high")
        assert job.result(timeout=60) == 4
        q._hub.drain()
        assert [e.kind for e in seen] == ["submitted", "running", "done"]
        who = {(e.job_id, e.owner, e.priority, e.fn) for e in seen}
        assert who == {(job.id, "ann", "high", "builtins.abs")}
        assert [e.t for e in seen] == [t for t, _, _ in job.events]
        stop()
        assert q.submit(abs, -5).result(timeout=60) == 5 and len(seen) == 3
        assert "ZeroDivisionError" in caplog.text and q.stats()["errors"]["loop"] is None


# -- the fencing token, checked by the worker -----------------------------------------------
def test_a_worker_refuses_an_attempt_of_a_driver_without_the_lease(cluster, tmp_path):
    store, log = str(tmp_path / "q.db"), str(tmp_path / "log")
    with JobQueue(cluster, store=store) as q:
        blob = cloudpickle.dumps((effect, (log, "stale"), {}))
        fut = cluster.client.submit(run_fenced, blob, fence=(os.path.abspath(store), "not-the-holder"),
                                    pure=False)
        with pytest.raises(LeaseError, match="did not run"):
            fut.result(timeout=60)
        ok = cluster.client.submit(run_fenced, blob, fence=(os.path.abspath(store), q._lease.driver),
                                   pure=False)
        assert ok.result(timeout=60)[0] == "stale"
    assert open(log).read().split() == ["stale"]


def test_an_attempt_handed_over_just_after_a_take_over_never_runs(cluster, tmp_path):
    """The instant between the driver's lease read and ``client.map``: the read is made
    to miss the take-over (and the store's writes are held, so no write tells it
    either); the worker's check of the fencing token still stops the attempt."""
    store, log, flag = str(tmp_path / "q.db"), str(tmp_path / "log"), tmp_path / "flag"
    flag.touch()
    with dask.config.set({"packlab.queue.lease-timeout": "1h"}):  # no heartbeat notices it
        old = JobQueue(cluster, store=store, max_in_flight=1)
    try:
        old.submit(hold, str(flag))
        job = old.submit(effect, log, "late")
        old.flush()
        t0 = time.monotonic()
        while not os.path.exists(str(flag) + ".started"):  # the blocker runs on its worker
            assert time.monotonic() - t0 < 60
            time.sleep(0.01)
        old.flush()  # nothing of the old queue's is left to write: no write can tell it
        new = JobQueue(cluster, store=store, take_over=True)
        other = sqlite3.connect(store, isolation_level=None, timeout=30)
        other.execute("BEGIN IMMEDIATE")  # no write of the old queue lands: none can tell it
        try:
            old._lease.held = lambda: True  # "it cannot know yet"
            flag.unlink()  # the blocker ends: the old queue hands the waiting job to Dask
            while not old._lease.lost:  # the refusing worker tells the old queue
                assert time.monotonic() - t0 < 60, "the old queue never learnt it lost its lease"
                time.sleep(0.01)
            assert not os.path.exists(log)  # handed to Dask, refused by the worker: never ran
            assert job.attempts == 1  # it was handed over
        finally:
            other.execute("ROLLBACK")
            other.close()
        with new:
            assert new.resume().get(job.id).result(timeout=60) == "late"  # the new driver runs it
    finally:
        flag.unlink(missing_ok=True)
        old.close()
    assert open(log).read().split() == ["late"]  # once, by the new driver


# -- the CLI acts through the live driver ---------------------------------------------------
def hold(flag):
    open(flag + ".started", "w").close()
    t0 = time.monotonic()
    while os.path.exists(flag) and time.monotonic() - t0 < 60:
        time.sleep(0.005)
    return "released"


def test_cli_cancel_and_requeue_reach_the_live_driver(cluster, tmp_path):
    store, flag = str(tmp_path / "q.db"), tmp_path / "flag"
    flag.touch()
    with JobQueue(cluster, store=store, max_in_flight=1) as q:
        blocker = q.submit(hold, str(flag))
        waiting = q.submit(abs, -6)
        q.flush()
        r = CliRunner().invoke(cli, ["queue", "cancel", waiting.id, "--store", store])
        assert r.exit_code == 0 and "asked the queue driving" in r.output, r.output
        assert waiting.exception(timeout=60) is None and waiting.status == "cancelled"
        q.flush()
        r = CliRunner().invoke(cli, ["queue", "requeue", waiting.id, "--store", store])
        assert r.exit_code == 0, r.output
        flag.unlink()
        assert blocker.result(timeout=60) == "released"
        t0 = time.monotonic()
        while waiting.status != "done":
            assert time.monotonic() - t0 < 60, waiting.history()
            time.sleep(0.01)
        assert waiting.result() == 6 and [k for _, k, _ in waiting.events].count("requeued") == 1
        q.flush()
        r = CliRunner().invoke(cli, ["queue", "cancel", waiting.id, "--store", store])
        assert r.exit_code == 2 and "already final" in r.output and "JOB_ID" not in r.output


def test_cli_cancel_without_a_driver_changes_the_store(cluster, tmp_path):
    store, flag = str(tmp_path / "q.db"), tmp_path / "flag"
    flag.touch()
    with JobQueue(cluster, store=store, max_in_flight=1) as q:
        q.submit(hold, str(flag))
        waiting = q.submit(abs, -7)
        q.flush()
    flag.unlink()
    r = CliRunner().invoke(cli, ["queue", "cancel", waiting.id, "--store", store])
    assert r.exit_code == 0 and "cancelled in" in r.output, r.output
    r = CliRunner().invoke(cli, ["queue", "ls", "--status", "cancelled", "--store", store])
    assert waiting.id in r.output
    r = CliRunner().invoke(cli, ["queue", "ls", "--limit", "0", "--store", store])
    assert r.exit_code == 2 and "--limit=0 is invalid: expected a whole number of at least 1" in r.output


def test_recognising_a_store_open_in_this_process_keeps_its_sqlite_locks(tmp_path):
    """POSIX drops every lock a process holds on a file when it closes any descriptor of
    it: recognising a store by reading its header with open() would drop SQLite's locks of
    a live connection here, and another process closing its connection would then think it
    was the last one and checkpoint the WAL away under it."""
    from packlab import store
    from packlab.queue.schema import QUEUE

    path = str(tmp_path / "q.db")
    _, con, _ = store.open_store(path, "rwc", (QUEUE,))  # a live connection, as a running queue holds
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("INSERT INTO events VALUES ('j', 1.0, 'submitted', '')")
    assert os.path.getsize(path + "-wal") > 0
    assert store.identify(path, path) == "packlab"  # recognised while con holds its lock
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("
                    "'SELECT COUNT(*) FROM events').fetchall()", path], check=True)
    # the other process saw a connection still open here: it left the WAL alone
    assert os.path.exists(path + "-wal") and os.path.getsize(path + "-wal") > 0
    con.close()
