"""Walltime expiry on the test SLURM: workers with a short walltime retire by themselves
(packlab gives them ``--lifetime`` a margin shorter than the walltime) before SLURM would
kill them, and adaptive scaling replaces them while a queue run goes on: every job done
once, and SLURM records each retired job COMPLETED, never TIMEOUT.

The walltime is 20 s: packlab's margin (``packlab.slurm.lifetime-margin``, at least 60 s but
at most half the walltime) is then 10 s, so each worker retires 10 s +- 5 s after it starts.
SLURM counts time limits in whole minutes, so its limit for these jobs is 1 minute.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import warnings

import cloudpickle
import dask
import pytest
import queue_driver
from slurm_jobs import jobs_named, small

import packlab
from packlab.clusters.slurm import job_log_tail, worker_lifetime

pytestmark = pytest.mark.slurm

WALLTIME, JOB_S, RETIREMENTS = 20, 0.3, 2


def seconds(runtime: str) -> int:
    h, m, s = (int(x) for x in runtime.split(":"))
    return 3600 * h + 60 * m + s


def test_workers_retire_before_their_walltime_and_adaptive_replaces_them(tmp_path, figure):
    lifetime, stagger = worker_lifetime(WALLTIME)
    assert (lifetime, stagger) == (10, 5)  # the 60 s minimum margin is capped at walltime / 2
    cloudpickle.register_pickle_by_value(queue_driver)  # the workers cannot import the tests

    def slow_effect(key: str, log: str, db: str) -> str:  # nested: pickled by value too
        time.sleep(JOB_S)
        return queue_driver.effect(key, log, db)

    log, effects, store = (str(tmp_path / n) for n in ("log", "effects.db", "q.db"))
    with sqlite3.connect(effects) as con:
        con.execute("CREATE TABLE effects (key TEXT PRIMARY KEY)")
    keys: list[str] = []
    retired: dict[str, dict] = {}
    stop = threading.Event()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        # Dask forgets a worker that left after lost-worker-timeout (15 s by default), and
        # dask-jobqueue then cancels its job: 8 s lets the retired job end by itself first
        # (its worker process takes ~4 s to exit). Adaptive wants a second worker for 1 s
        # of queued work (target-duration, 5 s by default).
        with dask.config.set({"distributed.deploy.lost-worker-timeout": "8s",
                              "distributed.adaptive.interval": "0.5s",
                              "distributed.adaptive.target-duration": "1s"}), \
                small(min_workers=1, max_workers=2, cooldown="5s", walltime=f"00:00:{WALLTIME}",
                      wait=120) as pc, packlab.JobQueue(pc, store=store) as q:
            name = pc.cluster.job_name

            def feed():  # keyed jobs, 6 unfinished at a time, until the loop below stops it
                while not stop.is_set():
                    counts = q.stats()["counts"]
                    if sum(counts.get(s, 0) for s in ("queued", "running", "retrying")) < 6:
                        key = f"k{len(keys)}"
                        q.submit(slow_effect, key, log, effects, key=key)
                        keys.append(key)
                    else:
                        time.sleep(0.05)

            feeder = threading.Thread(target=feed, daemon=True)
            t0 = time.monotonic()
            feeder.start()
            try:
                end = time.monotonic() + 150
                # Until RETIREMENTS workers retired and a replacement has joined the run.
                while time.monotonic() < end:
                    jobs = jobs_named(name)
                    retired = {j: info for j, info in jobs.items()
                               if info["JobState"] not in {"PENDING", "RUNNING", "CONFIGURING"}}
                    if len(retired) >= RETIREMENTS and len(jobs) > len(retired) and pc.workers:
                        break
                    time.sleep(0.2)
            finally:
                stop.set()
                feeder.join(timeout=30)
            q.wait(timeout=120)
            took = time.monotonic() - t0
            most = pc.adaptive.scale_ups
            script = pc.cluster.job_script()
    cloudpickle.unregister_pickle_by_value(queue_driver)
    assert len(retired) >= RETIREMENTS, f"only {len(retired)} workers retired in 150 s"

    # SLURM's record: every job that ended while the cluster ran ended by itself, done
    # (COMPLETED, exit 0) inside its limit, and its log says why: the lifetime. (Its run
    # time includes the worker's start and exit, a few seconds each beside the lifetime.)
    for job_id, info in retired.items():
        assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), info
        assert seconds(info["RunTime"]) < seconds(info["TimeLimit"]), info
        assert "worker-lifetime-reached" in job_log_tail(script, job_id, lines=10_000), job_id
    every = jobs_named(name)
    assert not [j for j, info in every.items() if info["JobState"] == "TIMEOUT"]

    # The queue: every keyed job done, recorded done once, its effect exactly once.
    con = sqlite3.connect(store)
    rows = dict(con.execute("SELECT key, status FROM jobs"))
    done_events = dict(con.execute("SELECT job_id, COUNT(*) FROM events WHERE kind = 'done' GROUP BY job_id"))
    con.close()
    assert rows == {k: "done" for k in keys} and set(done_events.values()) == {1}
    effect_rows = sorted(k for (k,) in sqlite3.connect(effects).execute("SELECT key FROM effects"))
    assert effect_rows == sorted(keys)
    appended = open(log).read().split()
    assert set(appended) == set(keys)
    figure("walltime_lifetimes_replaced", len(retired),
           f"walltime {WALLTIME} s (SLURM limit {next(iter(retired.values()))['TimeLimit']}): "
           f"--lifetime {lifetime}s +- {stagger}s; {len(retired)} worker jobs retired COMPLETED "
           f"(run times {sorted(seconds(i['RunTime']) for i in retired.values())} s), 0 TIMEOUT, "
           f"{len(every)} jobs in all, {most} adaptive scale-ups; {len(keys)} keyed jobs completed, "
           f"lost 0, duplicated 0, {len(appended) - len(keys)} re-runs in the raw log; {took:.1f} s")
