"""Cluster start-up: packlab.launch against a bare LocalCluster (and SLURM scale-up)."""

from __future__ import annotations

import shutil
import sys
import time
import warnings

import dask
from distributed import Client, LocalCluster

import packlab

from .table import Row


def _bare_local() -> float:
    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as c, \
            Client(c) as cl:
        cl.wait_for_workers(2)
        dt = time.perf_counter() - t0
    return dt


def _packlab_local(security: bool) -> float:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        with packlab.launch(workers=2, cores=1, memory="1GiB", security=security, wait=True):
            dt = time.perf_counter() - t0
    return dt


def _bare_slurm_scale2() -> float:
    """dask-jobqueue's SLURMCluster alone, same worker size and TLS: the baseline."""
    import os

    from dask_jobqueue import SLURMCluster
    from distributed import Security

    # The same jobqueue.slurm settings packlab reads (the test SLURM's interface and shared dir).
    shared = dask.config.get("jobqueue.slurm.shared-temp-directory") or os.path.expanduser("~/.packlab/slurm")
    sec = Security.temporary()
    with SLURMCluster(cores=1, processes=1, memory="1GiB", walltime="01:00:00", queue="batch",
                      scheduler_options={"dashboard_address": "127.0.0.1:0"},
                      python=sys.executable, security=sec, shared_temp_directory=shared,
                      log_directory=os.path.join(shared, "logs")) as cluster, \
            Client(cluster, security=sec) as client:
        t0 = time.perf_counter()
        cluster.scale(2)
        client.wait_for_workers(2, timeout=60)
        return time.perf_counter() - t0


def _slurm_scale2() -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        with packlab.launch(backend="slurm", workers=0, cores=1, memory="1GiB") as pc:
            t0 = time.perf_counter()
            pc.scale(2)
            pc.wait_for_workers(2, timeout=60)
            return time.perf_counter() - t0


def run(quick: bool = False) -> list[Row]:
    n = 1 if quick else 3
    g = "cluster start to 2 connected workers (local)"
    rows = [
        Row(g, "bare LocalCluster (tcp)", min(_bare_local() for _ in range(n)), "s",
            baseline=True, higher_is_better=False),
        Row(g, "packlab.launch (TLS)", min(_packlab_local(True) for _ in range(n)), "s",
            higher_is_better=False),
        Row(g, "packlab.launch (security=False)", min(_packlab_local(False) for _ in range(n)),
            "s", higher_is_better=False),
    ]
    if shutil.which("sbatch"):
        g = "SLURM: scale(2) to 2 connected TLS workers"
        rows += [
            Row(g, "bare dask-jobqueue SLURMCluster", min(_bare_slurm_scale2() for _ in range(n)),
                "s", baseline=True, higher_is_better=False),
            Row(g, "packlab slurm", min(_slurm_scale2() for _ in range(n)), "s",
                higher_is_better=False),
        ]
    return rows
