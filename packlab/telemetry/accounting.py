"""Service units of a cluster's worker jobs, as their batch scheduler bills them.

A backend that runs workers as batch jobs says how its scheduler reports them
(:meth:`packlab.clusters.Backend.accounting`: SLURM's ``scontrol``, ...). Each worker job's
``billing`` (its partition's billing weights applied to what it was allocated) and its
elapsed time are stored in ``tel_slurm`` (the table's name is from when SLURM was the only
scheduler); service units are billing x elapsed hours (:func:`~.pricing.service_units`),
what ``sreport -t hours -T billing`` would charge. :class:`JobsRecorder` polls while the
cluster runs and once more after it closed, when the jobs' final run times are known.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from ..clusters.base import JobAccounting, JobRecord
from .pricing import billing as billing_of
from .tables import Writer

log = logging.getLogger("packlab.telemetry")


def job_rows(cluster: str, jobs: list[JobRecord], workers: dict[str, str], now: float) -> list[tuple]:
    """``tel_slurm`` rows from a scheduler's job records (``workers``: job id to worker name).

    Examples
    --------
    >>> r = JobRecord("7", "RUNNING", "batch", "cpu=2,billing=3", None, 65.0)
    >>> job_rows("c1", [r], {"7": "w-0"}, 100.0)
    [('c1', '7', 'w-0', 'batch', 'RUNNING', 3.0, None, 65.0, 100.0)]
    """
    rows = []
    for j in jobs:
        try:
            bill = billing_of(j.tres) if "billing=" in j.tres else None
        except ValueError:
            bill = None
        rows.append((cluster, j.job_id, workers.get(j.job_id), j.partition, j.state, bill, j.submitted,
                     j.elapsed, now))
    return rows


class JobsRecorder:
    """Polls the worker jobs of a dask-jobqueue cluster every ``every`` seconds."""

    def __init__(self, cluster: Any, accounting: JobAccounting, cluster_id: str, store: str,
                 every: float = 30.0) -> None:
        self.cluster, self.accounting, self.cluster_id = cluster, accounting, cluster_id
        self.store, self.every = store, every
        self.jobs: dict[str, str] = {}  # job id -> worker name: remembered after the job is gone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="packlab-telemetry-jobs")
        self._thread.start()

    def remember(self) -> None:
        """Note the cluster's worker jobs now (the cluster forgets them once closed)."""
        for name, job in list(getattr(self.cluster, "workers", {}).items()):
            jid = getattr(job, "job_id", None)
            if jid:
                self.jobs[str(jid)] = str(name)

    def poll(self, store: str | None = None) -> int:
        """Read every known worker job now and write it; the jobs written."""
        if not self.accounting.available():
            return 0
        self.remember()
        rows = job_rows(self.cluster_id, self.accounting.read(sorted(self.jobs)), self.jobs, time.time())
        if rows:
            w = Writer(store or self.store, flush_interval=0.05)
            w.put("tel_slurm", rows)
            w.close()
        return len(rows)

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(1.0):  # note new jobs often (cheap), ask the scheduler every ``every``
            with contextlib.suppress(Exception):
                self.remember()
                if time.monotonic() - last >= self.every:
                    last = time.monotonic()
                    self.poll()

    def close(self, store: str | None = None, settle: float = 10.0) -> None:
        """Stop polling; read the jobs once more when they have ended (up to ``settle`` s)."""
        self._stop.set()
        self._thread.join(timeout=30)
        deadline = time.monotonic() + settle
        active = self.accounting.active_states
        try:
            while True:
                jobs = self.accounting.read(sorted(self.jobs)) if self.accounting.available() else []
                if all(j.state not in active for j in jobs) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            self.poll(store)
        except Exception:
            log.warning("packlab telemetry: could not read the %s jobs' billing", self.accounting.scheduler,
                        exc_info=True)


__all__ = ["JobsRecorder", "job_rows"]
