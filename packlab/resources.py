"""What this machine really has: CPUs, memory, GPUs."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

import psutil

#: The least memory packlab gives a worker: 256 MiB. An idle Dask worker process alone
#: takes 70-150 MiB, and its nanny restarts it at 95% of its limit, so below this a worker
#: restarts in a loop and a task never finishes (``memory=4`` is 4 bytes, not 4 GiB).
MIN_WORKER_MEMORY = 256 * 2**20


@dataclass(frozen=True)
class Machine:
    """Resources available to this process."""

    cpus: int
    memory: int  # bytes
    gpus: int


def visible_gpus() -> int:
    """Number of NVIDIA GPUs this process may use (0 when none or no driver)."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and cvd.strip() in ("", "-1"):
        return 0
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    n = sum(1 for line in out.splitlines() if line.startswith("GPU "))
    if cvd is not None:
        n = min(n, len([d for d in cvd.split(",") if d.strip()]))
    return n


def this_machine() -> Machine:
    """Measure the CPUs (respecting affinity/cgroups), memory and GPUs available.

    Examples
    --------
    >>> this_machine().cpus >= 1
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return Machine(cpus=cpus, memory=psutil.virtual_memory().total, gpus=visible_gpus())
