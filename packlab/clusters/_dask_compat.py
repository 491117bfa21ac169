"""Every place packlab depends on a Dask or dask-jobqueue detail that is not public API.

One module, so that a Dask release that changes one of them breaks here and in
``tests/clusters/test_dask_compat.py`` (which checks each assumption directly and says what to
change), not somewhere deep in a cluster's lifecycle.

- :func:`import_slurm_cluster`: ``dask_jobqueue.runner`` calls ``signal.signal(SIGINT, ...)``
  at import (``dask_jobqueue.slurm`` imports it). That replaces the program's Ctrl-C
  handler from the main thread, and raises ``ValueError`` from any other thread.
- :func:`adaptive_of`: ``Cluster.adapt`` keeps the controller in ``cluster._adaptive``;
  a user who called ``cluster.adapt()`` on the Dask object directly has no other handle.
- :func:`keep_workers`: ``SpecCluster`` forgets a worker whose process or job ended
  (after ``distributed.deploy.lost-worker-timeout``) but keeps it in ``worker_spec``;
  the public ``scale()`` with the current size then schedules the state correction that
  starts it again. Uses only public names (``worker_spec``, ``workers``, ``scale``,
  ``periodic_callbacks``), replacing an override of the private ``_update_worker_status``
  and a ``_correct_state`` call timed to run just after Dask's own callback.
- :func:`discard_unstarted`: dask-jobqueue's ``Job.close`` does not set the job's
  ``status``, and ``SpecCluster`` asserts, when it closes, that every worker object it
  ever made is closed; a job whose ``sbatch`` failed would make closing the cluster fail.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any

from distributed.core import Status
from tornado.ioloop import PeriodicCallback

#: Seconds between checks for workers that should be running and are not.
KEEP_WORKERS_INTERVAL = 1.0


@contextlib.contextmanager
def _keep_signal_handlers():
    """Undo, or (off the main thread) skip, ``signal.signal`` calls made by imports inside."""
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return
    real = signal.signal

    def only_from_main(signum, handler):
        # Off the main thread Python refuses any handler; the main thread's calls go through.
        if threading.current_thread() is threading.main_thread():
            return real(signum, handler)
        return signal.getsignal(signum)

    signal.signal = only_from_main
    try:
        yield
    finally:
        signal.signal = real


_IMPORT_LOCK = threading.Lock()


def import_slurm_cluster() -> type:
    """dask-jobqueue's ``SLURMCluster``, imported on first use, from any thread.

    Importing the local backend never imports dask-jobqueue; the first SLURM cluster
    imports it here, leaving the program's SIGINT handler as it was.
    """
    with _IMPORT_LOCK, _keep_signal_handlers():
        from dask_jobqueue import SLURMCluster
    return SLURMCluster


def adaptive_of(cluster: Any) -> Any | None:
    """The ``Adaptive`` that ``cluster.adapt()`` started, if any (Dask keeps it privately)."""
    return getattr(cluster, "_adaptive", None)


def keep_workers(cluster: Any, interval: float = KEEP_WORKERS_INTERVAL) -> PeriodicCallback:
    """Start again any worker that is in the cluster's spec but was lost (job ended, preempted).

    Workers removed by ``scale``/``adapt`` leave ``worker_spec`` first and are not
    replaced. Returns the periodic callback (stopped when the cluster closes).
    """

    def check() -> None:
        if cluster.status != Status.running:
            return
        if set(cluster.worker_spec) - set(cluster.workers):
            # Same size: changes nothing in the spec, schedules the state correction.
            cluster.scale(len(cluster.worker_spec))

    pc = PeriodicCallback(check, interval * 1000)
    cluster.periodic_callbacks["packlab-keep-workers"] = pc
    cluster.loop.add_callback(pc.start)
    return pc


async def discard_unstarted(cluster: Any) -> None:
    """Drop the cluster's workers that never started (their submission failed), so that
    the cluster can still be closed cleanly."""
    for name, job in list(cluster.workers.items()):
        if job.status != Status.running:
            cluster.worker_spec.pop(name, None)
            del cluster.workers[name]
            with contextlib.suppress(Exception):
                await job.close()
            job.status = Status.closed
