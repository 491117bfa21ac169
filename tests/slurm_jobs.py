"""SLURM's own view of packlab's worker jobs, for the tests that run on the test SLURM
(scripts/slurm-up): job states from ``squeue`` and ``scontrol``, and real preemption by a
``batch`` job. A plain module (like support.py), shared by tests/clusters/test_slurm*.py and
tests/chaos/."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid

import pytest

import packlab


def unique_name(what: str) -> str:
    """A job name of this test only, so counts ignore every other job."""
    return f"pl-{what}-{uuid.uuid4().hex[:6]}"


def queued(name: str) -> dict[str, str]:
    """Jobs of that name still in the queue (pending or running): id -> state."""
    out = subprocess.run(
        ["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split() for line in out.splitlines())


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (finished jobs stay visible for MinJobAge, 300 s)."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def jobs_named(name: str) -> dict[str, dict[str, str]]:
    """Every job of that name SLURM remembers, finished ones included: id -> fields."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True
    ).stdout
    jobs = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines()]
    return {j["JobId"]: j for j in jobs if j.get("JobName") == name}


def job_ids(pc) -> list[str]:
    """SLURM job ids of the cluster's current workers."""
    return [job.job_id for job in list(pc.cluster.workers.values()) if getattr(job, "job_id", None)]


def poll(condition, timeout: float, what: str, every: float = 0.1):
    """Return the first truthy ``condition()``, or fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def small(**kwargs) -> packlab.PackCluster:
    """launch(backend="slurm") with 1-core, 1 GiB workers: fast where size is not the point.

    Each cluster's jobs get a name of their own (dask-jobqueue names them all
    "dask-worker"), so squeue and scontrol can tell this cluster's jobs apart.
    """
    return packlab.launch(backend="slurm", cores=1, memory="1GiB",
                          job_name=unique_name("worker"), **kwargs)


def node_cpus(partition: str = "batch") -> int:
    """CPUs of a node of ``partition``, as ``sinfo`` reports them."""
    out = subprocess.run(["sinfo", "-h", "-o", "%c", "-p", partition], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0].rstrip("+"))


def preempt(name: str, seconds: float = 3) -> str:
    """Submit a ``batch`` job that needs every CPU of the node for ``seconds``: SLURM
    preempts (SIGTERM, requeue) every ``spot`` job in its way. Returns its job id."""
    out = subprocess.run(
        ["sbatch", "--parsable", "-p", "batch", "-c", str(node_cpus()), "--mem=1G",
         "-J", f"{name}-hog", "-o", os.devnull, "--wrap", f"sleep {seconds}"],
        capture_output=True, text=True, check=True,
    ).stdout
    return out.strip().split(";")[0]
