"""packlab against a real single-node SLURM (scripts/slurm-up): no mocks.

Every worker here is a real ``sbatch`` job; job states come from ``squeue`` and
``scontrol``. Figures (times, job counts) are printed as ``[figure]`` lines and
recorded as test properties, never asserted against wall-clock speed.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from slurm_jobs import job_ids, job_info, jobs_named, poll, queued, small, unique_name
from support import dashboard_binds

import packlab
from packlab.clusters import ClusterStartError
from packlab.clusters.base import ClusterRequest
from packlab.clusters.slurm import SlurmBackend
from packlab.errors import BackendUnavailable, PacklabError

pytestmark = pytest.mark.slurm


# -- the acceptance test: the default profile on real SLURM ----------------------
def test_default_profile_gives_two_tls_workers_that_compute(figure):
    a = np.random.default_rng(0).random((1200, 800))
    t0 = time.perf_counter()
    with packlab.launch(backend="slurm", workers=2, job_name=unique_name("default")) as pc:
        pc.wait_for_workers(2, timeout=120)
        elapsed = time.perf_counter() - t0
        figure("seconds_to_2_workers", elapsed,
               f"launch(backend='slurm', workers=2) to 2 connected TLS workers: {elapsed:.2f} s")

        assert pc.backend == "slurm" and pc.profile.name == "general-batch"
        assert pc.scheduler_address.startswith("tls://")
        workers = pc.client.scheduler_info()["workers"]
        assert len(workers) == 2
        assert all(addr.startswith("tls://") for addr in workers)
        # The profile's size reached the workers: 2 threads and 4 GiB each.
        assert {w["nthreads"] for w in workers.values()} == {2}
        assert {w["memory_limit"] for w in workers.values()} == {4 * 2**30}
        running = queued(pc.cluster.job_name)
        assert len(running) == 2 and set(running.values()) == {"RUNNING"}
        for job_id in running:  # and SLURM gave each job what the profile asks
            info = job_info(job_id)
            assert (info["NumCPUs"], info["MinMemoryNode"], info["Partition"]) == ("2", "4G", "batch")

        x = da.from_array(a, chunks=(300, 400))
        got = pc.client.compute((x @ x.T).mean(axis=0)).result()
        np.testing.assert_allclose(got, (a @ a.T).mean(axis=0))


# -- the job script: the profile's directives reach sbatch ---------------------------
def directives(script: str) -> list[str]:
    return [line.removeprefix("#SBATCH ").strip() for line in script.splitlines()
            if line.startswith("#SBATCH")]


def lifetime(script: str) -> tuple[int, int]:
    m = re.search(r"--lifetime (\d+)s --lifetime-stagger (\d+)s", script)
    assert m, script
    return int(m[1]), int(m[2])


def test_job_script_carries_the_profile():
    with packlab.launch(backend="slurm", workers=0) as pc:  # general-batch on batch
        script = pc.cluster.job_script()
    d = directives(script)
    assert "-p batch" in d and "--cpus-per-task=2" in d and "--mem=4G" in d
    assert "-t 01:00:00" in d
    assert "--requeue" not in d and not any(x.startswith("--gres") for x in d)
    life, stagger = lifetime(script)
    assert life + stagger < 3600  # every worker retires before SLURM kills it

    with packlab.launch(backend="slurm", profile="analytics", spot=True, workers=0,
                        walltime="00:30:00") as pc:
        script = pc.cluster.job_script()
    d = directives(script)
    assert "-p spot" in d and "--requeue" in d and "--cpus-per-task=4" in d
    assert "-t 00:30:00" in d
    life, stagger = lifetime(script)
    assert life + stagger < 1800


def test_gpu_profile_on_cpu_partition_warns_and_drops_gpus():
    with pytest.warns(packlab.PacklabWarning, match="running on CPU"):
        pc = packlab.launch(backend="slurm", profile="ml-training", workers=0)
    with pc:
        assert pc.profile.gpus == 0
        assert "--gres" not in pc.cluster.job_script()


def test_gpu_directives_when_the_partition_has_gpus():
    # The test SLURM has no GPUs, so ask the backend directly for a cluster of a GPU
    # profile (what right_size returns on a GPU partition); nothing is submitted.
    profile = packlab.PROFILES["ml-training"]
    request = ClusterRequest(backend="slurm", profile=profile, partition="batch")
    cluster = SlurmBackend().make_cluster(request, profile, None)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "--gres=gpu:1" in directives(script)
    assert "--resources GPU=1" in script
    assert "-t 08:00:00" in directives(script)


# -- adaptive scaling with cooldown -------------------------------------------------
def test_adapt_scales_to_zero_jobs_after_cooldown(figure):
    a = np.arange(4_000_000, dtype="f8").reshape(2000, 2000)
    with small(workers=0) as pc:
        adaptive = pc.adapt(minimum=0, maximum=2, cooldown="3s")
        name = pc.cluster.job_name
        x = da.arange(4_000_000, dtype="f8", chunks=250_000).reshape(2000, 2000)
        assert pc.client.compute((x * 2).sum()).result(timeout=120) == (a * 2).sum()
        assert adaptive.scale_ups >= 1
        idle = time.monotonic()
        poll(lambda: not queued(name) and pc.workers == 0, 90, "zero jobs in squeue")
        back = time.monotonic() - idle
        figure("seconds_back_to_zero_jobs", back,
               f"adapt(0, 2, cooldown=3s): idle to zero jobs in squeue: {back:.2f} s")
        assert adaptive.scale_downs >= 1
        # The guarantee the cooldown gives: no scale-down within 3 s of a scale-up.
        assert adaptive.last_down - adaptive.last_up >= 3.0


def bursts(pc, n: int, gap) -> None:
    """``n`` bursts of 8 x 0.3 s tasks; ``gap()`` runs between them (the idle time)."""

    def slow_square(x: int) -> int:  # nested: pickled by value, workers can't import tests
        time.sleep(0.3)
        return x * x

    for i in range(n):
        futures = pc.client.map(slow_square, range(8), key=[f"burst-{i}-{k}" for k in range(8)])
        assert pc.client.gather(futures) == [k * k for k in range(8)]
        del futures
        if i < n - 1:
            gap()


def test_bursty_workload_submits_a_bounded_number_of_jobs(figure):
    n = 4
    # Faster adaptive decisions (3 votes 0.5 s apart) keep this test short.
    with dask.config.set({"distributed.adaptive.interval": "0.5s"}):
        # cooldown=0: every idle gap ends with no jobs, so every burst submits new ones.
        gaps: list[float] = []

        def until_no_jobs():
            t = time.monotonic()
            poll(lambda: not queued(pc.cluster.job_name), 90, "scale-down to zero jobs")
            gaps.append(time.monotonic() - t)

        with small(workers=0) as pc:
            pc.adapt(minimum=0, maximum=2, cooldown=0)
            bursts(pc, n, until_no_jobs)
            name = pc.cluster.job_name
        without = len(jobs_named(name))
        gap = max(gaps)

        # The same bursts and gaps (as long as the longest one above), with a cooldown
        # longer than a gap but shorter than the whole workload: the workers stay,
        # because the cooldown counts from the last time the cluster was busy.
        cooldown = 2 * gap + 3
        with small(workers=0) as pc:
            adaptive = pc.adapt(minimum=0, maximum=2, cooldown=cooldown)
            bursts(pc, n, lambda: time.sleep(gap))
            name = pc.cluster.job_name
            scale_downs = adaptive.scale_downs
        with_cooldown = len(jobs_named(name))

    figure("jobs_bursty_cooldown_0", without,
           f"{n} bursts, idle gaps {gap:.1f} s: {without} jobs with cooldown=0, "
           f"{with_cooldown} with cooldown={cooldown:.1f}s")
    figure("jobs_bursty_cooldown", with_cooldown, "")
    assert without >= n
    assert scale_downs == 0
    assert 1 <= with_cooldown <= 2  # never more than maximum: no job was resubmitted
    assert with_cooldown < without


# -- the worker's lifetime (preemption, and walltime under adaptive scaling: tests/chaos/) --
def test_worker_retired_at_lifetime_gets_a_new_job(figure):
    # walltime 30 s: --lifetime 15 s +- 7 s, so the worker retires by itself within
    # 22 s and a fixed-size cluster must submit a new job rather than shrink to zero.
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1s"}), \
            small(workers=1, walltime="00:00:30") as pc:
        pc.wait_for_workers(1, timeout=120)
        (first,) = job_ids(pc)
        t0 = time.monotonic()
        second = poll(lambda: [j for j in job_ids(pc) if j != first], 120, "a replacement job")[0]
        pc.wait_for_workers(1, timeout=120)
        replaced = time.monotonic() - t0
        assert pc.client.submit(sum, [1, 2]).result(timeout=60) == 3
        jobs = queued(pc.cluster.job_name)
        assert jobs.get(first) in {None, "COMPLETING"} and jobs[second] == "RUNNING"
    figure("lifetime_replaced_after", replaced,
           f"walltime 30 s: job {first} retired at --lifetime, job {second} replaced it "
           f"{replaced:.1f} s after the first worker connected")


# -- errors that name the field, the value and the fix ----------------------------
def test_unknown_partition_lists_the_real_ones():
    with pytest.raises(PacklabError, match=r"partition='nope'.*\['batch', 'spot'\]"):
        packlab.launch(backend="slurm", partition="nope", workers=0)
    with dask.config.set({"packlab.slurm.spot-partition": "preemptible"}), \
            pytest.raises(PacklabError, match=r"spot-partition.*'preemptible'.*\['batch', 'spot'\]"):
        packlab.launch(backend="slurm", spot=True, workers=0)


def test_missing_sbatch_is_a_clear_error(tmp_path, monkeypatch):
    # A real PATH holding SLURM's other commands but not sbatch (no mock).
    for cmd in ("sinfo", "squeue", "scancel"):
        (tmp_path / cmd).symlink_to(subprocess.run(
            ["which", cmd], capture_output=True, text=True, check=True).stdout.strip())
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.path.dirname(sys.executable)}")
    with pytest.raises(BackendUnavailable, match=r"sbatch is not on PATH.*backend='local'"):
        packlab.launch(backend="slurm", workers=0)


def test_gpus_on_a_partition_without_gpus_is_an_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an error, not a warning and a CPU fallback
        with pytest.raises(PacklabError,
                           match=r"gpus=1 is more than a node of partition 'batch' has \(0 GPU.*gpus=0"):
            packlab.launch(backend="slurm", gpus=1, workers=0)


# -- safe defaults and the site's own configuration -------------------------------------
def test_dashboard_on_loopback_and_private_shared_and_log_directories():
    with small(workers=0) as pc:
        # The scheduler runs in this process (on the login node): read its sockets.
        assert dashboard_binds(pc.dashboard_link) == {"127.0.0.1"}
        shared = pc.cluster.shared_temp_directory
        script = pc.cluster.job_script()
    logs = re.search(r"#SBATCH -e (\S+)/", script)[1]
    for d in (shared, logs):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
        assert not os.path.islink(d)


def submitted_script(job_id: str) -> str:
    """The batch script SLURM really holds for the job (not what we think we sent)."""
    return subprocess.run(["scontrol", "write", "batch_script", job_id, "-"],
                          capture_output=True, text=True, check=True).stdout


def test_a_sites_jobqueue_yaml_reaches_the_submitted_job(tmp_path):
    """A site's jobqueue.yaml in a config directory Dask reads (as DASK_CONFIG or
    /etc/dask would be at startup): its directives, worker arguments, scheduler options,
    directories and python all apply, beside packlab's own."""
    site_logs, site_local = tmp_path / "site-logs", tmp_path / "site-local"
    site_logs.mkdir(mode=0o700)
    python = tmp_path / "site-python"  # a site's own wrapper around the interpreter
    python.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    (tmp_path / "jobqueue.yaml").write_text(f"""
jobqueue:
  slurm:
    job-extra-directives: ["--comment=site-directive", "--qos=normal"]
    worker-extra-args: ["--resources", "SITE=1"]
    scheduler-options: {{idle_timeout: 3600}}
    local-directory: {site_local}
    log-directory: {site_logs}
    python: {python}
""")
    dask.config.refresh(paths=[*dask.config.paths, str(tmp_path)])
    try:
        with small(workers=1) as pc:
            pc.wait_for_workers(1, timeout=120)
            (job_id,) = job_ids(pc)
            script = submitted_script(job_id)
            info = job_info(job_id)
            worker = next(iter(pc.client.scheduler_info()["workers"].values()))
            local_dir = pc.client.run(lambda dask_worker: dask_worker.local_directory)
            idle_timeout = pc.cluster.scheduler.idle_timeout
    finally:
        dask.config.refresh()
    d = directives(script)
    assert "--comment=site-directive" in d and "--qos=normal" in d  # the site's
    assert "--cpus-per-task=1" in d and "-p batch" in d  # packlab's
    assert info["Comment"] == "site-directive"
    assert f"{python} -m distributed.cli.dask_worker" in script
    assert "--resources SITE=1" in script and "--lifetime" in script  # both lists, merged
    assert worker["resources"] == {"SITE": 1.0}
    assert all(v.startswith(str(site_local)) for v in local_dir.values())
    assert idle_timeout == 3600
    assert f"#SBATCH -e {site_logs}/" in script
    assert any(site_logs.iterdir())  # SLURM wrote the job's log there


def test_a_job_slurm_refuses_raises_sbatchs_reason():
    # The node has no GPUs: sbatch itself refuses the job (no job is queued).
    name = unique_name("refused")
    with pytest.raises(ClusterStartError, match=r"(?s)SLURM refused the first worker job.*Invalid generic"):
        packlab.launch(backend="slurm", cores=1, memory="1GiB", job_name=name, workers=1,
                       job_extra_directives=["--gres=gpu:8"])
    assert not queued(name)


def test_a_worker_job_that_dies_at_start_raises_its_log_instead_of_waiting(figure):
    t0 = time.monotonic()
    with pytest.raises(ClusterStartError, match=r"(?s)ended before its worker connected.*No such file"):
        small(workers=1, wait=120, python="/nonexistent/python")
    elapsed = time.monotonic() - t0
    figure("dead_job_reported_after", elapsed,
           f"a worker job that dies at start: reported after {elapsed:.1f} s (wait=120)")


def test_backend_keywords_given_as_one_string_and_a_private_shared_directory(tmp_path):
    # review 7, findings 3 and 6, on the real SLURMCluster: one string is one directive,
    # and a shared directory given as a keyword is made owner-only like the setting.
    shared = tmp_path / "open"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with small(workers=0, job_extra_directives="--comment=packlab-one-item",
               shared_temp_directory=str(shared)) as pc:
        script = pc.cluster.job_script()
        assert pc.cluster.shared_temp_directory == str(shared)
    assert "--comment=packlab-one-item" in directives(script)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o700


def test_account_and_partition_on_local_are_refused_but_mean_something_here():
    with pytest.raises(PacklabError, match=r"partition='batch' needs backend='slurm'"):
        packlab.launch(backend="local", partition="batch", workers=0)
    with small(workers=0, partition="batch") as pc:
        assert "#SBATCH -p batch" in pc.cluster.job_script()


def test_an_adaptive_cluster_whose_worker_jobs_die_says_why_when_waited_on():
    # review 7, finding 4 on SLURM: a worker argument only the worker judges. Adaptive from
    # zero submits the job only when work comes; waiting for it raises the job's log
    # instead of waiting out the timeout.
    with small(min_workers=0, max_workers=1, cooldown=0, worker_extra_args=["--no-such-flag"]) as pc:
        future = pc.client.submit(sum, [1, 2])
        with pytest.raises(ClusterStartError, match=r"(?s)ended before its worker connected.*no-such-flag"):
            pc.wait_for_workers(1, timeout=120)
        future.cancel()
