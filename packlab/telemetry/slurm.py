"""SLURM service units of a cluster's worker jobs, as SLURM itself bills them.

Each worker job's ``billing`` TRES (its partition's ``TRESBillingWeights`` applied to what
it was allocated) and its elapsed time are read from ``scontrol show job`` and stored in
``tel_slurm``; service units are billing x elapsed hours
(:func:`~.pricing.service_units`), what ``sreport -t hours -T billing`` would charge.
:class:`SlurmRecorder` polls while the cluster runs and once more after it closed, when
the jobs' final run times are known (SLURM keeps ended jobs for ``MinJobAge``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import threading
import time
from typing import Any

from ..units import walltime_seconds
from .pricing import billing as billing_of
from .store import Writer

log = logging.getLogger("packlab.telemetry")


def parse_scontrol(text: str) -> list[dict[str, str]]:
    """``scontrol -o show job`` output (one job a line of ``Key=Value`` words) as dicts.

    Examples
    --------
    >>> [job] = parse_scontrol("JobId=7 JobState=RUNNING RunTime=00:01:05 TRES=cpu=2,billing=3")
    >>> job["JobId"], job["RunTime"], job["TRES"]
    ('7', '00:01:05', 'cpu=2,billing=3')
    """
    jobs = []
    for line in text.splitlines():
        fields = {}
        for word in line.split():
            key, sep, value = word.partition("=")
            if sep:
                fields[key] = value
        if "JobId" in fields:
            jobs.append(fields)
    return jobs


def job_rows(cluster: str, jobs: list[dict[str, str]], workers: dict[str, str], now: float) -> list[tuple]:
    """``tel_slurm`` rows from parsed ``scontrol`` records (``workers``: job id to worker name)."""
    rows = []
    for j in jobs:
        tres = j.get("AllocTRES") or j.get("TRES") or ""
        try:
            bill = billing_of(tres) if "billing=" in tres else None
        except ValueError:
            bill = None
        run = j.get("RunTime", "")
        try:
            elapsed = float(walltime_seconds(run, "RunTime")) if run and set(run) - set("0:-") else 0.0
        except ValueError:
            elapsed = 0.0
        rows.append((cluster, j["JobId"], workers.get(j["JobId"]), j.get("Partition"), j.get("JobState"),
                     bill, _epoch(j.get("SubmitTime")), elapsed, now))
    return rows


def _epoch(stamp: str | None) -> float | None:
    """SLURM's local ``2026-12-02T00:40:00`` as epoch seconds (``None``: unknown)."""
    import datetime

    try:
        return datetime.datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def show_jobs(ids: list[str]) -> list[dict[str, str]]:
    """``scontrol -o show job`` for ``ids`` (a job SLURM forgot is left out)."""
    out = []
    for jid in ids:
        r = subprocess.run(["scontrol", "-o", "show", "job", jid], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            out += parse_scontrol(r.stdout)
    return out


class SlurmRecorder:
    """Polls the worker jobs of a dask-jobqueue cluster every ``every`` seconds."""

    def __init__(self, cluster: Any, cluster_id: str, store: str, every: float = 30.0) -> None:
        self.cluster, self.cluster_id, self.store, self.every = cluster, cluster_id, store, every
        self.jobs: dict[str, str] = {}  # job id -> worker name: remembered after the job is gone
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="packlab-telemetry-slurm")
        self._thread.start()

    def remember(self) -> None:
        """Note the cluster's worker jobs now (the cluster forgets them once closed)."""
        for name, job in list(getattr(self.cluster, "workers", {}).items()):
            jid = getattr(job, "job_id", None)
            if jid:
                self.jobs[str(jid)] = str(name)

    def poll(self, store: str | None = None) -> int:
        """Read every known worker job now and write it; the jobs written."""
        if shutil.which("scontrol") is None:
            return 0
        self.remember()
        rows = job_rows(self.cluster_id, show_jobs(sorted(self.jobs)), self.jobs, time.time())
        if rows:
            w = Writer(store or self.store, flush_interval=0.05)
            w.put("tel_slurm", rows)
            w.close()
        return len(rows)

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(1.0):  # note new jobs often (cheap), read SLURM every ``every``
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
        try:
            while True:
                jobs = show_jobs(sorted(self.jobs)) if shutil.which("scontrol") else []
                if all(j.get("JobState") not in ("RUNNING", "PENDING", "CONFIGURING", "COMPLETING")
                       for j in jobs) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            self.poll(store)
        except Exception:
            log.warning("packlab telemetry: could not read the SLURM jobs' billing", exc_info=True)


__all__ = ["SlurmRecorder", "job_rows", "parse_scontrol", "show_jobs"]
