"""What SLURM says about a cluster's worker jobs: state, partition, allocation (TRES, with
its ``billing`` weight) and run time, read with ``scontrol -o show job``.

The SLURM backend hands this to telemetry through :meth:`.base.Backend.accounting`, so
telemetry records and prices the jobs of any scheduler the same way (the test SLURM has
no accounting database, so ``sacct`` is not used: SLURM keeps an ended job for
``MinJobAge`` seconds, long enough for the last read after the cluster closed).
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
from collections.abc import Iterable

from ..units import walltime_seconds
from .base import JobAccounting, JobRecord


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


def _epoch(stamp: str | None) -> float | None:
    """SLURM's local ``2026-12-02T00:40:00`` as epoch seconds (``None``: unknown)."""
    try:
        return datetime.datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def record(job: dict[str, str]) -> JobRecord:
    """One parsed ``scontrol`` job as a :class:`~.base.JobRecord`.

    Examples
    --------
    >>> r = record({"JobId": "7", "JobState": "RUNNING", "RunTime": "00:01:05", "TRES": "cpu=2,billing=3"})
    >>> r.job_id, r.state, r.elapsed, r.tres
    ('7', 'RUNNING', 65.0, 'cpu=2,billing=3')
    """
    run = job.get("RunTime", "")
    try:
        elapsed = float(walltime_seconds(run, "RunTime")) if run and set(run) - set("0:-") else 0.0
    except ValueError:
        elapsed = 0.0
    return JobRecord(job_id=job["JobId"], state=job.get("JobState", ""), partition=job.get("Partition"),
                     tres=job.get("AllocTRES") or job.get("TRES") or "",
                     submitted=_epoch(job.get("SubmitTime")), elapsed=elapsed)


class SlurmAccounting(JobAccounting):
    """Worker jobs as ``scontrol -o show job`` reports them."""

    scheduler = "SLURM"
    active_states = frozenset({"RUNNING", "PENDING", "CONFIGURING", "COMPLETING"})

    def available(self) -> bool:
        return shutil.which("scontrol") is not None

    def read(self, job_ids: Iterable[str]) -> list[JobRecord]:
        """The jobs ``job_ids`` (one SLURM forgot is left out)."""
        out = []
        for jid in job_ids:
            r = subprocess.run(["scontrol", "-o", "show", "job", jid], capture_output=True, text=True,
                               timeout=30)
            if r.returncode == 0:
                out += [record(j) for j in parse_scontrol(r.stdout)]
        return out


__all__ = ["SlurmAccounting", "parse_scontrol", "record"]
