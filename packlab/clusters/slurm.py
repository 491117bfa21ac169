"""The SLURM backend: dask-jobqueue's ``SLURMCluster``, one worker per batch job.

We only translate a profile into job directives and check the request against
what SLURM says exists; job scripts, submission and cancellation are
dask-jobqueue's. Everything else comes from the site's ``jobqueue.slurm`` settings
(its ``jobqueue.yaml``): packlab passes only what it decides, and extends the list-valued
settings (``job-extra-directives``, ``worker-extra-args``, ``scheduler-options``)
rather than replacing them. dask-jobqueue is imported on first use, so the local
backend never imports it.

A worker job can end while the cluster runs: preempted on a spot partition, or retired
by ``--lifetime`` before its walltime. Dask then forgets the worker but submits nothing,
so a fixed-size cluster would shrink for good; :func:`~._dask_compat.keep_workers`
submits a new job for it. Workers removed by ``scale``/``adapt`` are not replaced.

``dask worker`` serves its own dashboard and ``/metrics`` on every interface of its node by
default (``--dashboard-address :0``), without authentication; packlab's workers bind it to
the node's loopback, like the scheduler's dashboard.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import dask
from distributed import Security

from .. import config
from ..errors import BackendUnavailable, PacklabError
from ..files import private_directory
from ..profiles import Profile
from ..units import format_bytes, format_walltime
from ._dask_compat import discard_unstarted, import_slurm_cluster, keep_workers
from .base import Backend, ClusterRequest, ClusterStartError, clamp_gpus, keywords_of, register_backend
from .security import LOOPBACK_DASHBOARD, PURPOSE
from .security import dashboard_address as check_dashboard_address
from .slurm_accounting import SlurmAccounting

#: First among the workers' arguments, so that a ``--dashboard-address`` of the site's or
#: the user's (checked and warned about by :func:`worker_dashboards`) comes later and wins.
WORKER_DASHBOARD = ("--dashboard-address", LOOPBACK_DASHBOARD)


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


@register_backend
class SlurmBackend(Backend):
    """Each worker is one SLURM batch job submitted by dask-jobqueue."""

    name = "slurm"
    summary = "submits worker jobs with sbatch"
    reserved = {
        "n_workers": "pass workers= (or min_workers=/max_workers=) to launch() instead",
        "queue": "pass partition= to launch() instead",
        "processes": "packlab runs one worker per job (processes=1)",
        "job_cpu": "pass cores= to launch() instead",
        "job_mem": "pass memory= to launch() instead",
        "security": "pass security= to launch() instead",
        "protocol": "pass security= to launch() instead",
    }
    keyword_kinds = {
        "job_extra_directives": "strings",
        "job_directives_skip": "strings",
        "job_script_prologue": "strings",
        "worker_extra_args": "strings",
        "scheduler_options": "scheduler-options",
        "shared_temp_directory": "directory",
        "log_directory": "directory",
        "local_directory": "path",
        "silence_logs": "log-level",
        "death_timeout": "duration",
        "nanny": "boolean",
    }
    placement = frozenset({"spot", "partition", "account"})

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
            name = request.partition or jobqueue("queue")
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

    def accounting(self) -> SlurmAccounting:
        return SlurmAccounting()

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
        """A ``SLURMCluster`` given only what packlab decides; the site's ``jobqueue.slurm``
        settings (``jobqueue.yaml``) apply to everything else, and list-valued ones are
        extended, never replaced."""
        kwargs = slurm_kwargs(request, profile, security)
        cluster = import_slurm_cluster()(**kwargs)
        keep_workers(cluster)
        return cluster

    def check_started(self, cluster) -> None:
        async def submitted() -> None:
            await cluster  # public: runs the pending state correction, starts each job
            for job in list(cluster.workers.values()):
                await job  # a job whose sbatch failed is not running: this raises why

        try:
            cluster.sync(submitted)
        except Exception as e:
            cluster.sync(discard_unstarted, cluster)
            raise ClusterStartError(
                f"SLURM refused the first worker job: {type(e).__name__}: {e}".rstrip()
                + " Check the job's directives (cluster.job_script()) and your jobqueue.slurm "
                "settings."
            ) from e

    def start_failure(self, cluster) -> str | None:
        connected = {w.get("name") for w in cluster.scheduler_info.get("workers", {}).values()}
        waiting = {job.job_id: name for name, job in list(cluster.workers.items())
                   if getattr(job, "job_id", None) and name not in connected}
        if not waiting:
            return None
        out = subprocess.run(["squeue", "-h", "-j", ",".join(waiting), "-o", "%i"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            return None  # squeue itself failed: no verdict, keep waiting
        # Not listed (or already purged): the job is no longer pending or running.
        ended = sorted(set(waiting) - set(out.stdout.split()))
        if not ended:
            return None
        job_id = ended[0]
        return (f"SLURM job {job_id} for worker {waiting[job_id]!r} ended before its worker "
                f"connected. Its log: {job_log_tail(cluster.job_script(), job_id)}")

    def cluster_keywords(self) -> set[str]:
        cls = import_slurm_cluster()
        from dask_jobqueue.core import Job, JobQueueCluster
        from dask_jobqueue.slurm import SLURMJob

        return keywords_of(cls.__init__, JobQueueCluster.__init__, SLURMJob.__init__, Job.__init__)


def job_log_tail(script: str, job_id: str, lines: int = 15) -> str:
    """The last lines of a job's error log (the ``#SBATCH -e`` path of its script)."""
    m = re.search(r"^#SBATCH -e (\S+)", script, flags=re.M)
    if not m:
        return "(the job script names no log file)"
    path = m[1].replace("%J", job_id).replace("%j", job_id)
    try:
        with open(path, errors="replace") as f:
            tail = f.read().splitlines()[-lines:]
    except OSError as e:
        return f"{path} cannot be read ({e.strerror})"
    return f"{path}:\n" + "\n".join(tail) if tail else f"{path} (empty)"


def worker_dashboards(args: list[str], field: str) -> None:
    """Check a ``--dashboard-address`` among worker arguments like ``dashboard_address=``:
    malformed is an error, beyond loopback warns (the worker's dashboard has no login).

    Examples
    --------
    >>> worker_dashboards(["--dashboard-address", "127.0.0.1:8790"], "worker_extra_args")
    """
    for i, arg in enumerate(args):
        if arg == "--dashboard-address" and i + 1 < len(args):
            check_dashboard_address(args[i + 1], f"{field} --dashboard-address")
        elif arg.startswith("--dashboard-address="):
            check_dashboard_address(arg.split("=", 1)[1], f"{field} --dashboard-address")


def jobqueue(key: str):
    """``jobqueue.slurm.<key>`` from dask.config (the site's jobqueue.yaml and dask-jobqueue's defaults)."""
    return dask.config.get(f"jobqueue.slurm.{key}", default=None)


def slurm_kwargs(request: ClusterRequest, profile: Profile, security: Security | None) -> dict:
    """The keywords for ``SLURMCluster``: the profile, packlab's additions merged with the
    site's lists, and the user's own ``backend_kwargs`` (merged the same way)."""
    extra = dict(request.extra)
    # A directory given as a keyword is private like the configured one: never unchecked.
    shared_field, configured = "shared_temp_directory", extra.pop("shared_temp_directory", None)
    if configured is None:
        shared_field, configured = "jobqueue.slurm.shared-temp-directory", jobqueue("shared-temp-directory")
    if configured is None:  # packlab's own ~/.packlab is owner-only too
        private_directory(os.path.join("~", ".packlab"), "~/.packlab", purpose=PURPOSE)
    shared = private_directory(configured or os.path.join("~", ".packlab", "slurm"), shared_field,
                               purpose=PURPOSE)
    logs_field, logs = "log_directory", extra.pop("log_directory", None)
    if logs is None:
        logs_field, logs = "jobqueue.slurm.log-directory", jobqueue("log-directory")
    logs = private_directory(logs or os.path.join(shared, "logs"), logs_field, purpose=PURPOSE)
    lifetime, stagger = worker_lifetime(profile.walltime)
    site_args, user_args = jobqueue("worker-extra-args") or [], extra.pop("worker_extra_args", [])
    worker_dashboards(site_args, "jobqueue.slurm.worker-extra-args")
    worker_dashboards(user_args, "worker_extra_args")
    directives: list[str] = []
    worker_args = ["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"]
    if request.spot:
        # SLURM may preempt and requeue the job; Dask recomputes what was lost.
        directives.append("--requeue")
    if profile.gpus:
        directives.append(f"--gres=gpu:{profile.gpus}")
        worker_args += ["--resources", f"GPU={profile.gpus}"]

    kwargs = dict(
        cores=profile.cores,
        processes=1,
        memory=f"{profile.memory // 2**20}MiB",
        walltime=format_walltime(profile.walltime),
        job_name=f"packlab-{profile.name}",  # tells packlab's jobs apart in squeue
        queue=request.partition,
        job_extra_directives=[*(jobqueue("job-extra-directives") or []), *directives,
                              *extra.pop("job_extra_directives", [])],
        worker_extra_args=[*WORKER_DASHBOARD, *site_args, *worker_args, *user_args],
        # A dashboard address among the user's scheduler_options was taken out and checked
        # by launch() (keywords.check_backend_kwargs): request.dashboard_address is it.
        scheduler_options={**(jobqueue("scheduler-options") or {}), **extra.pop("scheduler_options", {}),
                           "dashboard_address": request.dashboard_address},
        shared_temp_directory=shared,
        log_directory=logs,
        security=security,
    )
    if request.account is not None:
        kwargs["account"] = request.account
    if jobqueue("local-directory") is None:
        # Node-local spill space; a site's local-directory (e.g. $TMPDIR) wins.
        kwargs["local_directory"] = tempfile.gettempdir()
    kwargs.update(extra)
    return kwargs
