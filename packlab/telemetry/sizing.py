"""Right-sizing, as ``seff`` reports a job: a worker's CPU and memory efficiency and the
cores, memory, walltime and profile its observed peaks call for.

Examples
--------
>>> w = WorkerUsage("w1", cores=8, memory=32 * GIB, held_seconds=7200, cpu_seconds=11520,
...                 memory_peak=5 * GIB)
>>> r = right_size(w)
>>> r.cpu_efficiency, r.cores, r.memory // GIB, r.profile
(0.2, 2, 6, 'data-transform')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import PacklabError
from ..units import format_walltime
from .records import record
from .usage import Thresholds, WorkerUsage

GIB = 2**30

@dataclass(frozen=True)
class RightSize:
    """``seff`` for one worker: its efficiencies and what it should have asked for.

    ``profile`` is the smallest profile that fits (``None`` when none does); ``launch`` the
    line that starts such workers.
    """

    worker: str
    cpu_efficiency: float
    memory_efficiency: float
    cores: int
    memory: int
    gpus: int
    walltime: int
    profile: str | None
    launch: str


def _gib_text(nbytes: float) -> str:
    """Bytes rounded up to half a GiB, as ``"2.5GiB"``."""
    return f"{max(0.5, math.ceil(nbytes / GIB * 2) / 2):g}GiB"


def right_size(worker: WorkerUsage | Mapping[str, Any], thresholds: Thresholds | None = None,
               profiles: Mapping[str, Any] | None = None) -> RightSize:
    """CPU and memory efficiency of ``worker`` and the size its observed peaks call for.

    Cores are the mean cores in use plus ``headroom``, rounded up, never more than it had
    (its use cannot be seen beyond that); memory is the peak plus ``headroom`` (twice the
    limit when it spilled near the limit: the real need was not seen; what it asked for
    when no peak was measured); walltime its time
    held plus ``headroom`` in quarter hours; GPUs are dropped when they sat idle. The
    profile is the smallest of ``profiles`` (default :data:`packlab.PROFILES`) with at
    least those cores, memory and GPUs, ordered by GPUs, then cores, then memory.

    Examples
    --------
    >>> w = WorkerUsage("w1", cores=4, memory=16 * GIB, held_seconds=3600, cpu_seconds=5400,
    ...                 memory_peak=3 * GIB)
    >>> r = right_size(w)
    >>> r.cpu_efficiency, r.memory_efficiency, r.cores, r.memory / GIB, r.walltime, r.profile
    (0.375, 0.1875, 2, 4.0, 4500, 'general-batch')
    >>> r.launch
    'packlab.launch(profile="general-batch", walltime="01:15:00")'
    """
    w = record(worker, WorkerUsage, "worker")
    th = Thresholds.of(thresholds)
    if profiles is None:
        from ..profiles import PROFILES as profiles
    h = 1 + th.headroom
    cpu_eff = w.cpu_seconds / (w.cores * w.held_seconds) if w.held_seconds else 0.0
    mem_eff = w.memory_peak / w.memory
    used_cores = w.cpu_seconds / w.held_seconds if w.held_seconds else 0.0
    cores = min(w.cores, max(1, math.ceil(round(used_cores * h, 9))))
    spilling = w.spilled_bytes > 0 and mem_eff >= th.memory_high
    # a peak of 0 was not measured: keep what it asked for
    need = 2 * w.memory if spilling else (w.memory_peak * h if w.memory_peak else w.memory)
    memory = int(float(_gib_text(need)[:-3]) * GIB)
    gpu_idle = w.gpu_utilisation is not None and w.gpu_utilisation < th.gpu_utilisation
    gpus = 0 if gpu_idle else w.gpus
    walltime = max(900, math.ceil(w.held_seconds * h / 900) * 900)
    fits = sorted((p for p in _usable(profiles) if p.cores >= cores and p.memory >= memory and p.gpus >= gpus
                   and (gpus > 0 or p.gpus == 0)), key=lambda p: (p.gpus, p.cores, p.memory, p.name))
    wt = format_walltime(walltime)
    if fits:
        line = f'packlab.launch(profile="{fits[0].name}", walltime="{wt}")'
    else:
        line = f'packlab.launch(cores={cores}, memory="{_gib_text(memory)}", gpus={gpus}, walltime="{wt}")'
    return RightSize(w.name, round(cpu_eff, 6), round(mem_eff, 6), cores, memory, gpus, walltime,
                     fits[0].name if fits else None, line)


def _usable(profiles: Mapping[str, Any]) -> list[Any]:
    """The profiles that parse: one broken entry in a user's config (reported wherever it is
    used) must not stop the advice about the others."""
    out = []
    for name in list(profiles):
        try:
            out.append(profiles[name])
        except PacklabError:
            continue
    return out
