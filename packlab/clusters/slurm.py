"""The SLURM backend: dask-jobqueue's ``SLURMCluster``, one worker per batch job.

We only translate a profile into job directives and check the request against
what SLURM says exists; job scripts, submission and cancellation are
dask-jobqueue's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

import dask
from dask.utils import parse_timedelta
from distributed import Security
from distributed.core import Status

from .. import config
from ..errors import BackendUnavailable, PacklabError
from ..profiles import Profile
from ..units import format_bytes, format_walltime
from .base import Backend, ClusterRequest, clamp_gpus, register_backend


def _import_slurm_cluster():
    """Import dask-jobqueue's SLURMCluster without letting it replace our Ctrl-C handler.

    ``dask_jobqueue.runner`` installs ``SIGINT -> sys.exit()`` at import, which would turn
    every Ctrl-C in a program that merely imports packlab into SystemExit and skip its
    ``except KeyboardInterrupt`` clean-ups.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    from dask_jobqueue import SLURMCluster

    if main and previous is not None:
        signal.signal(signal.SIGINT, previous)
    return SLURMCluster


SLURMCluster = _import_slurm_cluster()


@dataclass(frozen=True)
class Partition:
    """One SLURM partition as ``sinfo`` reports it (per-node sizes)."""

    name: str
    default: bool
    cpus: int
    memory: int  # bytes per node
    gpus: int


def partitions() -> dict[str, Partition]:
    """Ask SLURM (``sinfo``) which partitions exist and how big their nodes are."""
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P|%c|%m|%G"], capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError:
        raise BackendUnavailable("sinfo was not found: SLURM's client commands are not on PATH.") from None
    if out.returncode != 0:
        raise BackendUnavailable(f"sinfo failed ({out.stderr.strip()}): is slurmctld running?")
    found: dict[str, Partition] = {}
    for line in out.stdout.splitlines():
        name, cpus, mem, gres = line.split("|")
        default = name.endswith("*")
        name = name.rstrip("*")
        p = Partition(
            name=name,
            default=default,
            cpus=int(cpus.rstrip("+")),
            memory=int(mem.rstrip("+")) * 2**20,
            gpus=_gres_gpus(gres),
        )
        prev = found.get(name)  # several node kinds: keep the biggest
        if prev is None or p.cpus > prev.cpus:
            found[name] = p
    return found


def _gres_gpus(gres: str) -> int:
    """GPUs per node from a gres string such as ``gpu:a100:4(S:0-1)``; 0 for ``(null)``."""
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            return int(parts[-1])
    return 0


def worker_lifetime(walltime: int) -> tuple[int, int]:
    """Seconds of worker lifetime and stagger so workers retire before SLURM kills them.

    Examples
    --------
    >>> worker_lifetime(3600)
    (3240, 180)
    """
    margin = max(60, int(walltime * float(config.get("slurm.lifetime-margin"))))
    margin = min(margin, walltime // 2)
    stagger = margin // 2
    return walltime - margin, stagger


class PackSLURMCluster(SLURMCluster):
    """dask-jobqueue's ``SLURMCluster`` that submits a new job for a worker whose job ended.

    A worker job can end while the cluster runs: preempted on a spot partition, or
    retired by ``--lifetime`` before its walltime. Dask's ``SpecCluster`` then
    forgets the worker (and cancels its job) after
    ``distributed.deploy.lost-worker-timeout`` but submits nothing, so a fixed-size
    cluster would shrink for good and work waiting for it would hang.
    The worker is still in ``worker_spec`` (what the cluster should have), so we let
    ``SpecCluster`` restore that state. Workers removed by ``scale``/``adapt`` leave
    ``worker_spec`` first and are not replaced.
    """

    def _update_worker_status(self, op, msg):
        super()._update_worker_status(op, msg)
        if op == "remove":
            # After dask-jobqueue's own lost-worker callback (same timeout) has run.
            delay = parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))
            asyncio.get_running_loop().call_later(delay + 0.5, self._replace_lost_workers)

    def _replace_lost_workers(self) -> None:
        if self.status == Status.running and set(self.worker_spec) - set(self.workers):
            self._correct_state()


@register_backend
class SlurmBackend(Backend):
    """Each worker is one SLURM batch job submitted by dask-jobqueue."""

    name = "slurm"

    def check_available(self) -> None:
        missing = [c for c in ("sbatch", "squeue", "scancel", "sinfo") if shutil.which(c) is None]
        if missing:
            raise BackendUnavailable(
                f"backend='slurm' needs SLURM's commands, but {', '.join(missing)} "
                "is not on PATH: run on a login node of a SLURM cluster, load its module, "
                "or use backend='local'."
            )

    def choose_partition(self, request: ClusterRequest) -> Partition:
        known = partitions()
        if request.spot:
            name = config.get("slurm.spot-partition")
            if request.partition and request.partition != name:
                name = request.partition
        else:
            name = request.partition or config.get("slurm.partition")
        if name is None:
            default = [p for p in known.values() if p.default]
            if not default:
                raise PacklabError("SLURM has no default partition: pass partition=NAME.")
            return default[0]
        if name not in known:
            what = "spot partition (packlab.slurm.spot-partition)" if request.spot else "partition"
            raise PacklabError(
                f"{what}={name!r} does not exist on this SLURM cluster; sinfo lists "
                f"{sorted(known)}. Pass one of those."
            )
        return known[name]

    def right_size(self, request: ClusterRequest) -> tuple[Profile, list[str]]:
        part = self.choose_partition(request)
        request.partition = part.name
        p = request.profile
        notes = []
        cores, memory, gpus = p.cores, p.memory, p.gpus
        if cores > part.cpus:
            cores = part.cpus
            notes.append(
                f"profile {p.name!r} asks {p.cores} cores per worker; nodes of partition "
                f"{part.name!r} have {part.cpus}: using {cores}."
            )
        if memory > part.memory:
            memory = part.memory
            notes.append(
                f"profile {p.name!r} asks {format_bytes(p.memory)} per worker; nodes of "
                f"partition {part.name!r} have {format_bytes(part.memory)}: using that."
            )
        gpus, gpu_notes = clamp_gpus(
            request, part.gpus, f"a node of partition {part.name!r}",
            "pass partition= a GPU partition (sinfo -o '%P %G' lists them) or gpus=0.",
        )
        notes += gpu_notes
        return p.with_overrides(cores=cores, memory=memory, gpus=gpus), notes

    def make_cluster(self, request: ClusterRequest, profile: Profile, security: Security | None):
        shared = os.path.expanduser(
            config.get("slurm.shared-directory") or os.path.join("~", ".packlab", "slurm")
        )
        os.makedirs(os.path.join(shared, "logs"), exist_ok=True)
        lifetime, stagger = worker_lifetime(profile.walltime)
        directives: list[str] = []
        worker_args = ["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"]
        if request.spot:
            # SLURM may preempt and requeue the job; Dask recomputes what was lost.
            directives.append("--requeue")
        if profile.gpus:
            directives.append(f"--gres=gpu:{profile.gpus}")
            worker_args += ["--resources", f"GPU={profile.gpus}"]

        extra = dict(request.extra)
        directives += list(extra.pop("job_extra_directives", []))
        worker_args += list(extra.pop("worker_extra_args", []))
        scheduler_options = {"dashboard_address": ":0", **extra.pop("scheduler_options", {})}
        interface = extra.pop("interface", config.get("slurm.interface"))
        if interface:
            scheduler_options.setdefault("interface", interface)

        kwargs = dict(
            cores=profile.cores,
            processes=1,
            memory=f"{profile.memory // 2**20}MiB",
            walltime=format_walltime(profile.walltime),
            job_name=f"packlab-{profile.name}",  # tells packlab's jobs apart in squeue
            queue=request.partition,
            account=request.account or config.get("slurm.account"),
            job_extra_directives=directives,
            worker_extra_args=worker_args,
            interface=interface,
            python=config.get("slurm.python") or sys.executable,
            log_directory=os.path.join(shared, "logs"),
            local_directory=extra.pop("local_directory", tempfile.gettempdir()),  # node-local spill
            shared_temp_directory=shared,
            scheduler_options=scheduler_options,
            security=security,
        )
        kwargs.update(extra)
        return PackSLURMCluster(**kwargs)
