"""The store's filesystem full or turned read-only mid-run, on real mounts (we run as root).

Each test puts a store on a small filesystem of its own (a tmpfs, or a loop-mounted ext4
that the kernel turns read-only on an error), starts a run on a real local cluster and
breaks the filesystem mid-run. Expected, and checked through the store and the cluster: a
clear :class:`~packlab.errors.StoreError`; nothing handed to Dask after the failure (a
scheduler plugin sees every hand-over; one the driver had begun just before may reach the
scheduler up to 0.5 s later) and no job started on a worker after its in-flight attempts
were cancelled; every row recorded before the fault still there
(``PRAGMA integrity_check`` ok); and once the filesystem is writable again, ``resume()``
finishes the work, each job done exactly once in the record. Figures are printed with
``figure``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter

import dask
import numpy as np
import pytest
from distributed.diagnostics.plugin import SchedulerPlugin
from support import small_cluster

import packlab
from packlab import JobQueue
from packlab.errors import StoreError
from packlab.pipeline.checkpoints import CheckpointStore
from packlab.queue.jobstore import Store
from packlab.queue.lease import Lease

from . import mounts

#: How far each status is along a job's way: a record may only move forward.
RANK = {"queued": 0, "retrying": 1, "running": 2, "done": 3}
SETTLE = 1.0  # s after the failure: the in-flight attempts' cancel has reached the workers


@pytest.fixture
def tmpfs():
    mounts.require(mounts.cannot_mount("tmpfs"))
    with mounts.tmpfs("16m") as d:
        yield d


@pytest.fixture
def ext4():
    mounts.require(mounts.cannot_mount("ext4"))
    with mounts.ext4("32m") as fs:
        yield fs


# -- what runs on the workers, and what watches them -------------------------------------
def work(i: int, log: str) -> str:
    """A job: notes its start (on another filesystem), naps, returns 16 KB: the jobs after
    the fault must outgrow the slack SQLite's WAL may have (up to its 4 MB autocheckpoint)."""
    with open(log, "a") as f:
        f.write(f"{i} {time.time()!r}\n")
    time.sleep(0.01)
    return f"{i:06d}" * 2730


def starts(log: str) -> list[float]:
    with open(log) as f:
        return [float(line.split()[1]) for line in f]


class HandOvers(SchedulerPlugin):
    """On the scheduler: when each queue job's attempt was handed to Dask."""

    name = "chaos-hand-overs"

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []

    def update_graph(self, scheduler, *, keys, **kwargs) -> None:
        now = time.time()
        self.seen += [(now, str(k)) for k in keys if "-packlab-" in str(k)]


def hand_overs(client) -> list[tuple[float, str]]:
    return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins[HandOvers.name].seen)


# -- reading the record ------------------------------------------------------------------
def record(store: str) -> tuple[dict[str, str], set[tuple], str]:
    """(status per job, every event row, integrity_check) of a store, read-only."""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        jobs = dict(con.execute("SELECT id, status FROM jobs"))
        events = set(con.execute("SELECT rowid, job_id, t, kind, detail FROM events"))
        return jobs, events, con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def lost_rows(before: tuple, after: tuple) -> int:
    """Rows recorded before that are missing after, or whose job went backwards."""
    (jobs0, ev0, _), (jobs1, ev1, _) = before, after
    gone = sum(1 for jid, st in jobs0.items() if jid not in jobs1 or RANK[jobs1[jid]] < RANK[st])
    return gone + len(ev0 - ev1)


def done_once(store: str, n: int) -> tuple[int, int, int]:
    """(jobs done, jobs lost: not done, jobs duplicated: more than one 'done' event)."""
    jobs, events, ok = record(store)
    assert ok == "ok"
    dones = Counter(jid for _, jid, _, kind, _ in events if kind == "done")
    done = sum(st == "done" for st in jobs.values())
    return done, n - done, sum(c > 1 for c in dones.values())


def until(cond, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def stopped_cleanly(pc, q, jobs, log: str, failed_at: float) -> tuple[int, int]:
    """Assert the queue stopped at the failure: nothing handed to Dask after it, nothing
    started on a worker once its in-flight attempts were cancelled, submit refused.
    Returns (hand-overs after the failure, the last one's lag in ms, starts after it)."""
    time.sleep(SETTLE + 0.5)  # anything still dispatched would show by now
    handed = [t - failed_at for t, _ in hand_overs(pc.client)]
    late = [dt for dt in handed if dt > 0]
    assert all(dt < 0.5 for dt in late), f"jobs handed to Dask after the store failed: {late}"
    began = [t - failed_at for t in starts(log)]
    assert all(dt < SETTLE for dt in began), f"jobs started after the queue stopped: {sorted(began)[-5:]}"
    with pytest.raises(StoreError, match="so this queue cannot record jobs"):
        q.submit(work, -1, log)
    with pytest.raises(StoreError):
        jobs[-1].result(timeout=5)  # a job it could not finish says why, not "closed"
    return len(late), round(1000 * max(late, default=0.0)), sum(dt > 0 for dt in began)


def fault_mid_run(pc, store: str, log: str, n: int, fault, match: str):
    """Run ``n`` jobs on a queue; once a third are done, ``fault()`` breaks the store's
    filesystem. Checks the error and the stop; returns (queue, record before the fault,
    the StoreError, stopped_cleanly's figures, what ``fault`` returned)."""
    pc.client.register_plugin(HandOvers())
    q = JobQueue(pc, store=store)
    jobs = q.map(work, range(n), log=log)
    until(lambda: sum(j.status == "done" for j in jobs) >= n // 3, "a third of the jobs")
    before = record(store)
    out = fault()
    with pytest.raises(StoreError, match=match) as err:
        q.wait(timeout=60)
    assert f"JobQueue(cluster, store={store!r}).resume() finishes the work" in str(err.value)
    assert q.stats()["errors"]["store"].startswith("StoreError: store ")
    return q, before, err.value, stopped_cleanly(pc, q, jobs, log, q._store.failed), out


def outcome(what: str, n: int, before, after, stop, store: str, log: str) -> str:
    """Assert nothing recorded was lost and every job was done once; the figure's text."""
    done, lost, dup = done_once(store, n)
    assert after[2] == "ok" and lost_rows(before, after) == 0
    assert (done, lost, dup) == (n, 0, 0)
    late, lag, began = stop
    return (f"{what}: 1 fault after {sum(s == 'done' for s in before[0].values())} of {n} jobs done; event "
            f"rows {len(before[1])} before, {len(after[1])} after, 0 lost, integrity ok; hand-overs after "
            f"the failure {late} (the last {lag} ms after it), starts after it {began} (within {SETTLE} s); "
            f"after resume {done} done, {lost} lost, {dup} duplicated, {len(starts(log)) - n} ran twice")


# -- 1. the filesystem full mid-run --------------------------------------------------------
def test_store_filesystem_full_stops_the_queue_and_resume_finishes(tmpfs, tmp_path, figure):
    store, log, n = os.path.join(tmpfs, "q.db"), str(tmp_path / "starts.log"), 300
    with small_cluster() as pc:
        q, before, err, stop, filler = fault_mid_run(pc, store, log, n, lambda: mounts.fill(tmpfs),
                                                     "the filesystem holding it is full")
        assert err.kind == "full"
        after = record(store)
        q.close()  # while still full: its lease cannot be deleted, the next queue takes it
        os.remove(filler)  # space returns
        with JobQueue(pc, store=store) as q2:
            q2.resume().wait(timeout=120)
    figure("store_full", {"faults": 1, "rows_before": len(before[1]), "rows_after": len(after[1])},
           outcome("store filesystem full (tmpfs)", n, before, after, stop, store, log))


# -- 2. the filesystem turned read-only mid-run ------------------------------------------
def test_store_filesystem_turned_read_only_stops_the_queue_and_resume_finishes(ext4, tmp_path, figure):
    store, log, n = os.path.join(ext4.path, "q.db"), str(tmp_path / "starts.log"), 300
    with small_cluster() as pc:
        q, before, err, stop, _ = fault_mid_run(pc, store, log, n, ext4.fail,  # as on a disk error
                                                "the filesystem holding it is read-only")
        assert err.kind == "read-only"
        q.close()
    # Every file on it closed (the queue, and the cluster whose telemetry wrote there): only
    # now can it be mounted again; ext4 refuses remount,rw after an error (see mounts.py).
    ext4.remount()
    after = record(store)
    with small_cluster() as pc, JobQueue(pc, store=store) as q2:
        q2.resume().wait(timeout=120)
    figure("store_read_only", {"faults": 1, "rows_before": len(before[1]), "rows_after": len(after[1])},
           outcome("store filesystem turned read-only (ext4 errors=remount-ro)", n, before, after, stop,
                   store, log))


# -- 1b. a pipeline's checkpoint directory full mid-run ------------------------------------
def unit(i: int, log: str) -> np.ndarray:
    with open(log, "a") as f:
        f.write(f"{i} {time.time()!r}\n")
    time.sleep(0.03)
    return np.full(4000, i, dtype=np.float64)  # a 32 KB checkpoint


def chaos_pipeline(root: str, log: str) -> packlab.Pipeline:
    pipe = packlab.Pipeline("chaos", checkpoint=root)

    @pipe.stage
    def items():
        return list(range(60))

    @pipe.stage(map_over="items")
    def block(items, log=log):
        return unit(items, log)

    @pipe.stage
    def total(block):
        return float(sum(b.sum() for b in block))

    return pipe


def test_checkpoint_filesystem_full_mid_pipeline_then_resume(tmpfs, tmp_path, figure):
    root, log = os.path.join(tmpfs, "ckpt"), str(tmp_path / "units.log")
    pipe = chaos_pipeline(root, log)
    with small_cluster() as pc:
        def fill_midway():
            until(lambda: os.path.exists(log) and len(starts(log)) >= 20, "20 units", timeout=120)
            mounts.fill(tmpfs)

        filler = threading.Thread(target=fill_midway)
        filler.start()
        outcome: list = []
        runner = threading.Thread(target=lambda: outcome.append(_run(pipe, pc)))
        runner.start()
        runner.join(timeout=120)
        assert not runner.is_alive(), "pipe.run() hangs on a queue whose store failed"
        filler.join()
        assert isinstance(outcome[0], StoreError) and outcome[0].kind == "full", outcome
        assert "so this queue cannot record jobs" in str(outcome[0])
        written = _checkpoints(root)  # every checkpoint there is whole; no half-written one left
        assert os.listdir(os.path.join(root, "tmp")) == []
        os.remove(os.path.join(tmpfs, "filler"))
        run = pipe.run(pc)
    assert run.failed == [] and run["total"].result == float(sum(i * 4000 for i in range(60)))
    assert run["block"].invalid == [] and run["block"].units_cached >= written
    ran = Counter(int(line.split()[0]) for line in open(log))
    assert set(ran) == set(range(60))
    figure("checkpoints_full", {"faults": 1, "units_before": written, "rework": sum(ran.values()) - 60},
           f"checkpoint directory full mid fan-out: 1 fault; {written} of 60 unit checkpoints written before "
           f"it, all valid and reused; {sum(ran.values()) - 60} units computed twice (in flight at the "
           "fault); result right")


def _run(pipe, pc):
    try:
        return pipe.run(pc)
    except Exception as e:  # what the test expects
        return e


def _checkpoints(root: str) -> int:
    """The fan-out's unit checkpoints on disk, each checked valid (a torn one fails here)."""
    store = CheckpointStore(root, "chaos")
    keys = os.listdir(os.path.join(root, "outputs", "block"))
    for key in keys:
        assert store.check("block", key) is None, (key, store.check("block", key))
    return len(keys)


# -- regressions of the bugs these tests found (fast: no cluster) ------------------------
def test_a_checkpoint_refused_by_a_full_disk_is_an_oserror_not_an_unwritable_output(tmpfs):
    """It was taken for an output no format can write (OutputNotSerializable: permanent,
    so the unit went straight to the dead letters) and the stage failed for good."""
    store = CheckpointStore(os.path.join(tmpfs, "ckpt"), "p")
    os.makedirs(os.path.join(tmpfs, "ckpt", "tmp"))
    mounts.fill(tmpfs)
    with pytest.raises(OSError) as err:
        store.write("s", "k", np.zeros(100_000))
    assert not isinstance(err.value, packlab.PacklabError)
    assert os.listdir(os.path.join(tmpfs, "ckpt", "tmp")) == []  # nothing torn left behind
    assert store.check("s", "k") == "missing"


def test_a_queue_store_on_a_full_disk_is_refused_with_a_store_error(tmpfs):
    """JobQueue() on a full disk said the store "cannot be used as a SQLite database ...
    Pass store= a path in a folder you can write" (a PacklabError: bad input), and its
    lease raised a bare sqlite3.OperationalError."""
    path = os.path.join(tmpfs, "q.db")
    Store(path).close()
    mounts.fill(tmpfs)
    with pytest.raises(StoreError, match=r"the filesystem holding it is full.*Free space there") as err:
        Store(path)  # what JobQueue() opens first
    assert err.value.kind == "full"
    with pytest.raises(StoreError, match=r"the filesystem holding it is full.*Free space there") as err:
        Lease(path)
    assert err.value.kind == "full" and "packlab cannot open" in str(err.value)


def test_a_lease_the_full_disk_kept_is_taken_by_the_next_queue_of_this_process(tmpfs, caplog):
    """A queue closed while its disk was full could not delete its lease row, and every
    new JobQueue of this process was refused for lease-timeout (30 s): "driven by another
    JobQueue: pid <this one>", though that queue was closed."""
    path = os.path.join(tmpfs, "q.db")
    Store(path).close()
    pad = sqlite3.connect(path, isolation_level=None)
    pad.execute("CREATE TABLE chaos_pad (x BLOB)")
    lease = Lease(path)
    filler = mounts.fill(tmpfs)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        while True:  # the WAL's last free frames too
            pad.execute("INSERT INTO chaos_pad VALUES (zeroblob(4096))")
    pad.close()
    lease.release()
    assert "could not release the driver lease" in caplog.text
    os.remove(filler)
    Lease(path).release()  # taken at once: its queue closed in this process


# -- 3. telemetry under faults -------------------------------------------------------------
#: Run by another process: hold the store's write lock for a while (telemetry's writes wait
#: 200 ms for it and are refused; the queue's wait up to 30 s).
HOLD_LOCK = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
con.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("ROLLBACK")
"""


def nap(i: int) -> int:
    time.sleep(0.04)
    return i


def telemetry_refused(pc, q) -> int:
    """Batches the store refused, of the queue's telemetry and of the scheduler plugin's."""
    from packlab.telemetry.plugin import NAME

    theirs = pc.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins[NAME].writer.refused)
    [recorder] = pc.telemetry.queues  # the queue's telemetry (packlab.telemetry.collect.QueueRecorder)
    return recorder.writer.refused + theirs


def test_telemetry_under_faults_never_stops_the_workload_and_still_opens(tmp_path, figure):
    from bokeh.document import Document

    from packlab.ui import document
    from packlab.ui.panel import panel

    store, n, hold = str(tmp_path / "run.db"), 100, 2.0
    fast = {"packlab.telemetry.interval": "0.25s", "packlab.telemetry.flush-interval": "0.25s"}
    with dask.config.set(fast):
        with small_cluster() as pc:
            q = JobQueue(pc, store=store)
            jobs = q.map(nap, range(n))
            until(lambda: sum(j.status == "done" for j in jobs) >= n // 5, "a fifth of the jobs")
            victim = next(iter(pc.client.run(os.getpid).values()))
            os.kill(victim, signal.SIGKILL)  # a worker killed: its nanny starts another
            holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, store, str(hold)],
                                      stdout=subprocess.PIPE, text=True)
            assert holder.stdout.readline().strip() == "locked"
            assert holder.wait(timeout=60) == 0
            q.wait(timeout=120)
            stats, refused = q.stats(), telemetry_refused(pc, q)
            q.close()
    assert stats["errors"] == {"loop": None, "store": None} and stats["counts"] == {"done": n}
    assert refused >= 1  # the lock really refused telemetry's writes
    done, lost, dup = done_once(store, n)
    assert (done, lost, dup) == (n, 0, 0)
    report = subprocess.Popen([sys.executable, "-m", "packlab.cli", "report", "--store", store],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p = panel(store)  # while the report runs
    assert p.frame.snapshot.jobs == n and len(p.figures) == 6
    assert len(p.worker_src.data["state"]) >= 3  # the killed worker, its replacement and the other
    doc = Document()
    document(doc, store)  # what JupyterLab's packlab tab shows
    assert doc.roots
    out, err = report.communicate(timeout=120)
    assert report.returncode == 0, err
    assert f"(0 of {n} jobs)" in out and f"jobs completed today      {n}" in out
    figure("telemetry_faults", {"faults": 2, "refused": refused, "jobs": done},
           f"telemetry under faults: 1 worker SIGKILLed + the store's write lock held {hold:g} s by another "
           f"process ({refused} telemetry batches refused, kept, written later): {done} of {n} jobs done, "
           f"{lost} lost, {dup} duplicated, no queue error; `packlab report` and the panel open on the store "
           f"({len(p.worker_src.data['state'])} workers shown)")
