"""The Dask and dask-jobqueue details packlab relies on (packlab/clusters/_dask_compat.py).

Each test checks one assumption directly, so a Dask release that changes it fails here
with a message that says what to change, rather than somewhere deep in a cluster.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import time

import dask
from distributed import LocalCluster

from packlab.clusters import _dask_compat


def test_dask_jobqueue_still_installs_a_sigint_handler_at_import():
    import dask_jobqueue.runner

    source = inspect.getsource(dask_jobqueue.runner)
    assert "signal.signal(signal.SIGINT" in source, (
        "dask_jobqueue.runner no longer installs a SIGINT handler at import: "
        "_dask_compat.import_slurm_cluster's signal guard can go."
    )


def test_importing_slurm_cluster_keeps_the_programs_sigint_handler():
    code = (
        "import signal, sys\n"
        "def mine(*a): pass\n"
        "signal.signal(signal.SIGINT, mine)\n"
        "from packlab.clusters._dask_compat import import_slurm_cluster\n"
        "import_slurm_cluster()\n"
        "assert 'dask_jobqueue.runner' in sys.modules\n"
        "assert signal.getsignal(signal.SIGINT) is mine, signal.getsignal(signal.SIGINT)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_importing_slurm_cluster_from_a_thread_works_and_changes_no_handler():
    code = (
        "import signal, sys, threading\n"
        "before = signal.getsignal(signal.SIGINT)\n"
        "out = []\n"
        "def f():\n"
        "    from packlab.clusters._dask_compat import import_slurm_cluster\n"
        "    out.append(import_slurm_cluster().__name__)\n"
        "t = threading.Thread(target=f); t.start(); t.join()\n"
        "assert out == ['SLURMCluster'], out\n"
        "assert signal.getsignal(signal.SIGINT) is before\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_cluster_adapt_keeps_its_adaptive_where_adaptive_of_reads_it():
    with LocalCluster(n_workers=0, dashboard_address="127.0.0.1:0", processes=False) as cluster:
        assert _dask_compat.adaptive_of(cluster) is None
        ad = cluster.adapt(minimum=0, maximum=1)
        assert _dask_compat.adaptive_of(cluster) is ad, (
            "distributed.deploy.Cluster.adapt no longer stores the controller in "
            "cluster._adaptive: update _dask_compat.adaptive_of."
        )
        ad.stop()


def test_keep_workers_starts_again_a_worker_the_cluster_lost():
    """A worker that goes away on its own (here: its nanny closed from outside, as when a
    SLURM job ends) is started again; one removed by scale() is not."""
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "0.2s"}), LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0", memory_limit="512MiB"
    ) as cluster:
        _dask_compat.keep_workers(cluster, interval=0.2)
        cluster.sync(cluster.workers[0].close)  # lost: still in worker_spec
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if 0 in cluster.workers and cluster.workers[0].status.name == "running" and len(
                    cluster.scheduler_info["workers"]) == 2:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(
                "SpecCluster no longer restarts a lost worker that is still in worker_spec when "
                "scale() is called with the current size: update _dask_compat.keep_workers."
            )
        cluster.scale(1)  # removed on purpose: not replaced
        while len(cluster.workers) != 1 or len(cluster.scheduler_info["workers"]) != 1:
            assert time.monotonic() < deadline, "scale(1) did not retire a worker"
            time.sleep(0.1)
        time.sleep(1.0)  # five keep_workers checks
        assert len(cluster.worker_spec) == 1 and len(cluster.workers) == 1


def test_dask_jobqueue_job_close_still_leaves_the_status_unset():
    from dask_jobqueue.core import Job

    assert "self.status" not in inspect.getsource(Job.close), (
        "dask_jobqueue's Job.close now sets the job's status: _dask_compat.discard_unstarted "
        "no longer needs to set it."
    )
