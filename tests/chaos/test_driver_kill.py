"""The driver process killed with SIGKILL at random points, mid-queue and mid-pipeline:
after ``resume()`` (a queue) or a re-run (a pipeline) every job is done exactly once in
the record, idempotent side effects happened exactly once, and every checkpoint is whole.

Each driver is a child forked from a pre-imported zygote and reaches one long-lived
cluster by name, so a trial costs a fork, a connection and the work. The kill time is
drawn from the seeded RNG (the seed is printed: ``PACKLAB_CHAOS_SEED=... PACKLAB_CHAOS_TRIALS=200``
replays or extends a run): see ``drivers.kill_plan``.
"""

from __future__ import annotations

import os
import time

import cloudpickle
import pipeline_driver
import pytest
import queue_driver

from packlab.pipeline import CheckpointStore
from packlab.queue import JobQueue
from packlab.queue.jobstore import Store

from .drivers import Tally, Zygote, effects_db, kill_at, kill_plan, query, record, runs

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(queue_driver)
cloudpickle.register_pickle_by_value(pipeline_driver)

JOBS = 16  # keyed jobs per queue trial (50 ms each, 2 workers)
PAUSE = 0.03  # s per fan-out element of the pipeline trials
UNITS = ["source", "total", "summary"] + [f"square-{i}" for i in range(pipeline_driver.ELEMENTS)]


@pytest.fixture(scope="module")
def cluster(chaos_cluster):
    return chaos_cluster


@pytest.fixture(scope="module")
def zygote(chaos_cluster):
    z = Zygote(chaos_cluster.name)
    yield z
    z.close()


def uninterrupted(zygote, make, d) -> float:
    """A driver run uninterrupted (warms the workers up): seconds from its fork to its end."""
    cmd = make(d / "warm-up")
    t0 = time.monotonic()
    killed, progress = kill_at(zygote.fork(cmd), cmd["log"] + ".progress", lambda: False, t0)
    assert killed < 0 and "finished" in progress, progress
    return progress["finished"]


def queue_cmd(d) -> dict:
    d.mkdir()
    return {"kind": "queue", "store": str(d / "q.db"), "log": str(d / "log"),
            "db": effects_db(str(d / "fx.db")), "n": JOBS}


def test_driver_sigkilled_mid_queue_resume_runs_each_job_exactly_once(cluster, zygote, tmp_path, chaos_rng,
                                                                       chaos_trials, figure):
    window = uninterrupted(zygote, queue_cmd, tmp_path)
    tally = Tally()
    for trial in range(chaos_trials(20)):
        cmd = queue_cmd(tmp_path / f"t{trial}")
        t0 = time.monotonic()
        plan, due = kill_plan(chaos_rng, cmd["log"], JOBS, t0)
        killed, progress = kill_at(zygote.fork(cmd), cmd["log"] + ".progress", due, t0)
        assert not any(p.startswith("error") for p in progress), progress
        before = record(cmd["store"])
        done_before = {k for k, (s, _) in before.items() if s == "done"}
        with JobQueue(cluster, store=cmd["store"], max_in_flight=4).resume() as q:
            for i in range(JOBS):  # the re-run submits every key: existing ones are that job
                q.submit(queue_driver.effect, f"k{i}", cmd["log"], cmd["db"], key=f"k{i}")
            q.wait(timeout=120)
        keys = {f"k{i}" for i in range(JOBS)}
        after, counts = record(cmd["store"]), runs(cmd["log"])
        fx = [k for (k,) in query(cmd["db"], "SELECT key FROM effects")]
        why = f"trial {trial}: killed {plan} ({killed:.3f} s) after {progress}"
        assert set(after) == keys, why  # one job per key, none lost
        assert all(s == "done" and n == 1 for s, n in after.values()), (why, after)  # done once
        assert sorted(fx) == sorted(keys), why  # idempotent side effects: exactly once
        assert set(counts) == keys and all(counts[k] == 1 for k in done_before), (why, counts)
        tally.trials += 1
        tally.killed += killed >= 0
        tally.partial += killed >= 0 and 0 < len(done_before) < JOBS
        tally.kill_times += [killed] if killed >= 0 else []
        tally.jobs += sum(s == "done" for s, _ in after.values())
        tally.done_before += len(done_before)
        tally.redone += sum(counts.values()) - JOBS
        tally.lost += len(keys - set(after))
        tally.duplicated += sum(max(0, n - 1) for _, n in after.values()) + len(fx) - len(set(fx))
    figure("driver_kill_queue", tally.__dict__, tally.line("driver SIGKILL mid-queue") +
           f" (an uninterrupted run: {window:.2f} s)")
    assert tally.killed >= tally.trials // 2 and tally.partial > 0  # not only after the end


def pipeline_cmd(d) -> dict:
    d.mkdir()
    return {"kind": "pipeline", "ckpt": str(d / "ckpt"), "log": str(d / "log"),
            "db": effects_db(str(d / "fx.db")), "pause": PAUSE}


def checkpoints(ckpt: str) -> dict[tuple[str, str], int]:
    """(stage, key) -> inode of every checkpoint directory under outputs/."""
    out = os.path.join(ckpt, "outputs")
    return {(stage, key): os.stat(os.path.join(out, stage, key)).st_ino
            for stage in (os.listdir(out) if os.path.isdir(out) else [])
            for key in os.listdir(os.path.join(out, stage))}


def torn(ckpt: str, fan_key: str) -> dict[str, int]:
    """What the killed driver left half-written under tmp/: name -> inode. (The driver
    writes one checkpoint itself, the fan-out's index ``square.<key>.<8 hex>``; the
    units' are written on workers, which live on and may still finish theirs.)"""
    tmp = os.path.join(ckpt, "tmp")
    names = [e for e in (os.listdir(tmp) if os.path.isdir(tmp) else [])
             if e.startswith(f"square.{fan_key}.") and len(e) == len(f"square.{fan_key}.") + 8]
    return {e: os.stat(os.path.join(tmp, e)).st_ino for e in names}


def unit_of(stage: str, key: str, fan_key: str) -> str | None:
    """The side effect a checkpoint stands for (``None``: the fan-out's own index)."""
    if stage != "square":
        return stage
    return None if key == fan_key else f"square-{int(key.rsplit('-', 1)[1])}"


def test_driver_sigkilled_mid_pipeline_rerun_completes_with_whole_checkpoints(
        cluster, zygote, tmp_path, chaos_rng, chaos_trials, figure):
    window = uninterrupted(zygote, pipeline_cmd, tmp_path)
    tally, orphans = Tally(), 0
    expected = {"source": list(range(8)), "square": [i * i for i in range(8)], "total": 140,
                "summary": {"n": 8, "total": 140}}
    for trial in range(chaos_trials(20)):
        cmd = pipeline_cmd(tmp_path / f"t{trial}")
        t0 = time.monotonic()
        plan, due = kill_plan(chaos_rng, cmd["log"], len(UNITS), t0)
        killed, progress = kill_at(zygote.fork(cmd), cmd["log"] + ".progress", due, t0)
        assert not any(p.startswith("error") for p in progress), progress
        store = CheckpointStore(cmd["ckpt"], "crash")
        whole_before = {unit for unit in checkpoints(cmd["ckpt"]) if store.check(*unit) is None}
        pipe = pipeline_driver.build(cmd["ckpt"], cmd["log"], pause=PAUSE, db=cmd["db"])
        half = torn(cmd["ckpt"], pipe.keys()["square"])
        runs_before = runs(cmd["log"])
        run = pipe.run(cluster)
        why = f"trial {trial}: killed {plan} ({killed:.3f} s) after {progress}"
        assert run.results == expected and not run.failed, why
        published = checkpoints(cmd["ckpt"])
        for unit in published:  # every checkpoint verifies against its manifest
            assert store.check(*unit) is None, (why, unit, store.check(*unit))
        assert not set(half.values()) & set(published.values()), why  # no torn write was published
        left = {os.path.basename(p) for p in pipe.clean(dry_run=True)}
        assert set(half) <= left, (why, half, left)  # what pipe.clean() removes
        counts, fx = runs(cmd["log"]), [k for (k,) in query(cmd["db"], "SELECT key FROM effects")]
        assert sorted(fx) == sorted(UNITS), (why, fx)  # idempotent side effects: exactly once
        assert set(counts) == set(UNITS), why
        reused = {unit_of(s, k, run["square"].key) for s, k in whole_before} - {None}
        for unit in reused:  # whole before the re-run: not run again by it
            assert counts[unit] == runs_before[unit], (why, unit)
        jobs = record(os.path.join(cmd["ckpt"], "queue.db"))
        unfinished = {k: s for k, (s, _) in jobs.items() if s != "done"}
        assert not unfinished, (why, unfinished)  # the record has no job left unfinished
        assert all(n == 1 for _, n in jobs.values()), (why, jobs)  # each done exactly once
        tally.trials += 1
        tally.killed += killed >= 0
        tally.partial += killed >= 0 and 0 < len(whole_before) < len(UNITS) + 1
        tally.kill_times += [killed] if killed >= 0 else []
        tally.jobs += len(jobs)
        tally.done_before += len(whole_before)
        tally.redone += sum(counts.values()) - len(UNITS)
        tally.duplicated += len(fx) - len(set(fx))
        orphans += len(half)
    figure("driver_kill_pipeline", tally.__dict__, tally.line("driver SIGKILL mid-pipeline") +
           f"; {orphans} torn writes left in tmp/, none used (an uninterrupted run: {window:.2f} s)")
    assert tally.killed >= tally.trials // 2 and tally.partial > 0


KILLED_CREATING = r"""
import os, sys
from packlab.queue.jobstore import Store
from packlab.store import opening

def killed(con, *schemas):  # SIGKILL's effect, at the worst moment: SQLite's header written, no schema
    os._exit(9)

opening.migrate = killed
Store(sys.argv[1])
"""


def test_a_driver_killed_while_it_creates_its_store_leaves_no_store_that_is_refused(tmp_path):
    """Regression (found by the pipeline trials): a driver killed between SQLite writing
    the new store's header (``PRAGMA journal_mode=WAL``) and the schema's commit left a
    header-only database that every later JobQueue and pipeline re-run refused as "not a
    packlab store (tables: none)", so the work could not be resumed at all. A store is
    now created whole or not at all."""
    import subprocess
    import sys

    store = str(tmp_path / "q.db")
    p = subprocess.run([sys.executable, "-c", KILLED_CREATING, store], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 9, p.stderr
    s = Store(store)  # what resume() opens: a new, working store, not a refusal
    try:
        assert s.counts() == {}
    finally:
        s.close()
    assert [e for e in os.listdir(tmp_path) if not e.startswith("q.db")] == \
        [e for e in os.listdir(tmp_path) if e.endswith(".creating")]  # the dead creator's file, apart
    assert oct(os.stat(store).st_mode & 0o777) == "0o600"
