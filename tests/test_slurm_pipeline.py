"""A pipeline on spot capacity of a real single-node SLURM (scripts/slurm-up): its worker
job is preempted mid-stage by a batch job, and the pipeline still finishes with the same
result, the long stage restarting from its in-stage saved state. No mocks."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
import warnings

import dask
import pytest

import packlab

pytestmark = pytest.mark.slurm

STEPS, SAVE_EVERY, PREEMPT_AT = 40, 10, 14


@pytest.fixture
def figure(capsys, record_property):
    """Print a measured figure past pytest's capture and record it in the report."""
    def report(name: str, value: object, text: str) -> None:
        record_property(name, value)
        with capsys.disabled():
            print(f"\n    [figure] {text}", end="")
    return report


def steps_logged(log: str) -> list[int]:
    if not os.path.exists(log):
        return []
    return [int(line.split()[1]) for line in open(log).read().splitlines()]


def pids_logged(log: str) -> list[str]:
    return [line.split()[0] for line in open(log).read().splitlines()]


def build(ckpt: str, log: str) -> packlab.Pipeline:
    pipe = packlab.Pipeline("spot", checkpoint=ckpt)

    @pipe.stage
    def weights():
        return list(range(STEPS))

    @pipe.stage
    def train(weights, ctx, log=log):
        state = ctx.load({"step": 0, "total": 0})
        ctx.autosave(lambda: dict(state))  # what the SIGTERM before the kill saves
        while state["step"] < STEPS:
            i = state["step"]
            time.sleep(0.25)
            with open(log, "a") as f:
                f.write(f"{os.getpid()} {i}\n")
            state = {"step": i + 1, "total": state["total"] + weights[i]}
            if state["step"] % SAVE_EVERY == 0:
                ctx.save(state)
        return state["total"]

    @pipe.stage
    def report(train):
        return f"total {train}"

    return pipe


def test_spot_pipeline_preempted_mid_stage_finishes_with_the_same_result(tmp_path, figure):
    ckpt, log = str(tmp_path / "ckpt"), str(tmp_path / "steps")
    name = f"pl-pipe-{uuid.uuid4().hex[:6]}"
    cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c", "-p", "batch"], capture_output=True, text=True,
                              check=True).stdout.split()[0].rstrip("+"))
    hog: dict[str, object] = {}

    def preempt_mid_stage():
        end = time.monotonic() + 180
        while len(steps_logged(log)) < PREEMPT_AT and time.monotonic() < end:
            time.sleep(0.05)
        hog["done_before"] = len(steps_logged(log))
        hog["t"] = time.monotonic()
        hog["id"] = subprocess.run(
            ["sbatch", "--parsable", "-p", "batch", "-c", str(cpus), "--mem=1G", "-J", f"{name}-hog",
             "-o", os.devnull, "--wrap", "sleep 3"], capture_output=True, text=True, check=True,
        ).stdout.strip().split(";")[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}), \
                packlab.launch(backend="slurm", spot=True, workers=1, cores=1, memory="1GiB",
                               job_name=name, wait=True) as pc:
            t = threading.Thread(target=preempt_mid_stage, daemon=True)
            t.start()
            t0 = time.monotonic()
            run = build(ckpt, log).run(pc)
            took = time.monotonic() - t0
            t.join(timeout=5)
    assert "id" in hog, "the stage finished before the batch job was submitted"
    assert run.ok and run["train"].result == sum(range(STEPS))
    assert run["report"].result == f"total {sum(range(STEPS))}"
    steps = steps_logged(log)
    pids = pids_logged(log)
    restart = next((steps[i] for i in range(1, len(steps)) if pids[i] != pids[i - 1]), None)
    assert restart is not None, "the stage never moved to a new worker: no preemption happened"
    how = ("the SIGTERM before the kill autosaved it" if restart % SAVE_EVERY
           else f"its last ctx.save (every {SAVE_EVERY} steps)")
    done_before = pids.count(pids[0])  # steps the preempted worker finished
    assert done_before >= int(hog["done_before"])
    assert run["train"].resumed == 1, run.report()  # restarted from a saved state, not from zero
    redone = len(steps) - STEPS
    assert redone < done_before, (redone, done_before, steps)  # less rework than a restart from 0
    assert sorted(set(steps)) == list(range(STEPS))
    clean = build(str(tmp_path / "clean"), str(tmp_path / "clean-steps"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as local:
            assert clean.run(local).results == run.results  # the same result as an uninterrupted run
    figure("spot_pipeline_rework_saved_steps", done_before - redone,
           f"spot pipeline: batch job {hog['id']} submitted after {hog['done_before']} of {STEPS} steps, "
           f"the spot worker preempted after {done_before}; "
           f"restarted at step {restart} from {how}; {redone} steps redone instead of {done_before} "
           f"(saved {done_before - redone} steps, {0.25 * (done_before - redone):.1f} s of work); "
           f"finished in {took:.1f} s")
