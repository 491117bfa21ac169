"""Spot workers preempted for real, twice, while a JobQueue runs keyed jobs with side
effects and a pipeline stage with in-stage checkpoints runs on the same workers.

The workers are jobs on the test SLURM's ``spot`` partition (``launch(spot=True)``); a
``batch`` job that needs every CPU of the node makes SLURM preempt them (SIGTERM, requeue),
and packlab submits replacement jobs once the batch job has left. What must hold: every
job completes, each keyed job's side effect happens once (an ``INSERT OR IGNORE`` table; a
raw append log shows the re-runs at-least-once execution allows), the pipeline's result is
right and its in-stage saves bound the steps redone, and data Dask held only on the
preempted workers is recomputed. Supersedes tests/test_slurm_pipeline.py and
test_slurm.py's single-preemption test (folded in here).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import warnings

import cloudpickle
import dask
import dask.array as da
import numpy as np
import pytest
import queue_driver
from distributed import wait
from slurm_jobs import job_ids, job_info, preempt, queued, small

import packlab

pytestmark = pytest.mark.slurm

STEPS, SAVE_EVERY, STEP_S = 24, 4, 0.25
PREEMPT_AT = (6, 15)  # steps logged by the stage when each batch job is submitted
BATCH_S = 1  # how long each batch job holds the node


def steps_logged(log: str) -> list[tuple[str, int]]:
    """(pid, step) of every step the stage ran, in order, re-runs included."""
    if not os.path.exists(log):
        return []
    return [(pid, int(step)) for pid, step in (line.split() for line in open(log).read().splitlines())]


def build(ckpt: str, log: str) -> packlab.Pipeline:
    pipe = packlab.Pipeline("spot", checkpoint=ckpt)

    @pipe.stage(priority="high")
    def weights():
        return list(range(STEPS))

    @pipe.stage(priority="high")
    def train(weights, ctx, log=log):
        state = ctx.load({"step": 0, "total": 0})
        if not ctx.resumed:  # the first preemption: saved by the SIGTERM before the kill;
            ctx.autosave(lambda: dict(state))  # the second: only the last ctx.save
        while state["step"] < STEPS:
            i = state["step"]
            time.sleep(STEP_S)
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {i}\n")
            state = {"step": i + 1, "total": state["total"] + weights[i]}
            if state["step"] % SAVE_EVERY == 0:
                ctx.save(state)
        return state["total"]

    @pipe.stage(priority="high")
    def report(train):
        return f"total {train}"

    return pipe


class Faults:
    """Preempts the spot workers whenever the stage has logged each of ``PREEMPT_AT``
    steps; feeds the queue keyed jobs until the last preemption is over."""

    def __init__(self, pc, q, log: str, effects: str):
        self.pc, self.q, self.log, self.effects = pc, q, log, effects
        self.preemptions: list[dict] = []
        self.keys: list[str] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def wait_for(self, condition, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > end:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def preempt_all(self) -> None:
        try:
            for at in PREEMPT_AT:
                self.wait_for(lambda at=at: len(steps_logged(self.log)) >= at and self.pc.workers >= 1,
                              180, f"step {at} of the stage")
                spot = [j for j, state in queued(self.pc.cluster.job_name).items() if state == "RUNNING"]
                t0 = time.monotonic()
                hog = preempt(self.pc.cluster.job_name, BATCH_S)
                self.wait_for(lambda: self.pc.workers == 0, 60, "the spot workers to leave")
                gone = time.monotonic()
                self.wait_for(lambda: self.pc.workers >= 1, 120, "a replacement spot worker")
                self.preemptions.append({"spot": spot, "hog": hog, "lost_after": gone - t0,
                                         "outage": time.monotonic() - gone})
        except BaseException as e:
            self.error = e
        finally:
            self.done.set()

    def feed(self) -> None:
        """Keyed jobs, never more than 8 unfinished, from before the first preemption until
        the last one is over."""
        while not self.done.is_set():
            counts = self.q.stats()["counts"]
            if sum(counts.get(s, 0) for s in ("queued", "running", "retrying")) < 8:
                key = f"k{len(self.keys)}"
                self.q.submit(queue_driver.effect, key, self.log + ".effects", self.effects, key=key)
                self.keys.append(key)
            else:
                time.sleep(0.02)


def test_spot_preempted_twice_during_a_queue_run_and_a_pipeline_stage(tmp_path, figure):
    # The workers need queue_driver.effect by value: they cannot import the tests.
    cloudpickle.register_pickle_by_value(queue_driver)
    ckpt, log, effects, store = (str(tmp_path / n) for n in ("ckpt", "steps", "effects.db", "q.db"))
    with sqlite3.connect(effects) as con:
        con.execute("CREATE TABLE effects (key TEXT PRIMARY KEY)")
    a = np.random.default_rng(1).random((600, 600))
    b = a * 2 + 1
    # Dask forgets a vanished worker after this timeout (15 s by default); packlab then
    # submits a replacement job.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        with dask.config.set({"distributed.deploy.lost-worker-timeout": "0.5s"}), \
                small(spot=True, workers=2, wait=120) as pc, \
                packlab.JobQueue(pc, policy="priority", store=store) as q:
            first = job_ids(pc)
            assert {job_info(j)["Partition"] for j in first} == {"spot"}
            # Intermediate results that live only on the spot workers.
            y = pc.client.persist(da.from_array(a, chunks=150) * 2 + 1)
            wait(y)
            faults = Faults(pc, q, log, effects)
            threads = [threading.Thread(target=faults.preempt_all, daemon=True),
                       threading.Thread(target=faults.feed, daemon=True)]
            for t in threads:
                t.start()
            t0 = time.monotonic()
            run = build(ckpt, log).run(q)
            for t in threads:
                t.join(timeout=240)
            q.wait(timeout=240)
            took = time.monotonic() - t0
            got = pc.client.compute((y @ y.T).sum()).result(timeout=180)
            last = job_ids(pc)
    cloudpickle.unregister_pickle_by_value(queue_driver)
    if faults.error:
        raise faults.error
    assert len(faults.preemptions) == len(PREEMPT_AT)

    # SLURM's record: each worker job preempted was requeued by SLURM, the batch jobs ran,
    # and the workers at the end are replacements on spot.
    preempted = [j for p in faults.preemptions for j in p["spot"]]
    assert all(int(job_info(j)["Restarts"]) >= 1 for j in preempted)
    assert all(job_info(p["hog"])["JobState"] in {"COMPLETING", "COMPLETED"} for p in faults.preemptions)
    assert not set(last) & set(preempted) and {job_info(j)["Partition"] for j in last} == {"spot"}

    # The data Dask held only on preempted workers: recomputed, the same answer.
    np.testing.assert_allclose(got, (b @ b.T).sum())

    # The queue: every keyed job done, recorded done once, its effect exactly once.
    con = sqlite3.connect(store)
    rows = dict(con.execute("SELECT key, status FROM jobs WHERE fn LIKE '%effect'"))
    done_events = dict(con.execute(
        "SELECT j.key, COUNT(*) FROM events e JOIN jobs j ON j.id = e.job_id "
        "WHERE e.kind = 'done' GROUP BY j.id"))
    con.close()
    keys = faults.keys
    assert len(keys) >= 40 and rows == {k: "done" for k in keys}
    assert all(done_events[k] == 1 for k in keys)
    effect_rows = [k for (k,) in sqlite3.connect(effects).execute("SELECT key FROM effects")]
    assert sorted(effect_rows) == sorted(keys)
    appended = open(log + ".effects").read().split()
    assert set(appended) == set(keys)  # nothing lost; re-runs show at-least-once execution
    reruns = len(appended) - len(keys)

    # The pipeline: the right result, every step done, rework bounded by the saves.
    assert run.ok and run["train"].result == sum(range(STEPS)), run.report()
    assert run["report"].result == f"total {sum(range(STEPS))}"
    steps = steps_logged(log)
    assert sorted({s for _, s in steps}) == list(range(STEPS))
    attempts: list[list[int]] = []  # the steps each worker process ran, in order
    for i, (pid, step) in enumerate(steps):
        if i == 0 or pid != steps[i - 1][0]:
            attempts.append([])
        attempts[-1].append(step)
    assert len(attempts) == len(PREEMPT_AT) + 1, attempts  # each preemption restarted the stage
    assert run["train"].resumed >= 1, run.report()  # from a saved state, not from step 0
    redone = len(steps) - STEPS
    # The first restart resumes where the SIGTERM's autosave left it (the step in progress
    # at most is redone), the second at the last ctx.save (every SAVE_EVERY steps): fewer
    # than SAVE_EVERY redone. Without in-stage saves every restart would begin at step 0
    # and redo all that the preempted attempts had done.
    (first, second, third) = attempts
    assert second[0] >= first[-1], attempts
    assert third[0] % SAVE_EVERY == 0 and third[0] > second[-1] - SAVE_EVERY, attempts
    by_autosave, by_save = first[-1] + 1 - second[0], second[-1] + 1 - third[0]
    without_ctx = sum(len(a) for a in attempts[:-1])
    assert redone == by_autosave + by_save < without_ctx

    figure("spot_chaos_preemptions", len(faults.preemptions),
           f"spot chaos: {len(faults.preemptions)} preemptions (batch jobs "
           f"{', '.join(p['hog'] for p in faults.preemptions)}; workers gone "
           f"{', '.join(format(p['lost_after'], '.1f') for p in faults.preemptions)} s after each, "
           f"back after {', '.join(format(p['outage'], '.1f') for p in faults.preemptions)} s), "
           f"{len(preempted)} worker jobs preempted, replaced by {', '.join(last)}; finished in {took:.1f} s")
    figure("spot_chaos_keyed_jobs", len(keys),
           f"queue under preemption: {len(keys)} keyed jobs completed, lost 0, duplicated 0 "
           f"(effects table {len(effect_rows)} rows, one done record each); the raw log shows "
           f"{reruns} re-runs (at-least-once)")
    figure("spot_chaos_rework_steps", redone,
           f"pipeline stage under preemption: {STEPS} steps done, {len(steps)} run; restarts at "
           f"steps {[att[0] for att in attempts[1:]]}: {redone} redone ({by_autosave} after the "
           f"SIGTERM autosave, {by_save} after the last ctx.save of every {SAVE_EVERY}), "
           f"{without_ctx} without in-stage checkpoints")
