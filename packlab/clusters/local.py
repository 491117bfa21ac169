"""The local backend: Dask's ``LocalCluster`` (or dask-cuda's ``LocalCUDACluster``)."""

from __future__ import annotations

import contextlib

from distributed import LocalCluster, Nanny, Security, Worker
from distributed.deploy.spec import SpecCluster

from .. import config
from ..errors import PacklabError
from ..profiles import Profile
from ..resources import MIN_WORKER_MEMORY, this_machine
from ..units import format_bytes
from .base import Backend, ClusterRequest, ClusterStartError, clamp_gpus, keywords_of, register_backend


@register_backend
class LocalBackend(Backend):
    """Worker processes on this machine, sized from the profile and clamped to it."""

    name = "local"
    summary = "runs on this machine"
    reserved = {
        "n_workers": "pass workers= (or min_workers=/max_workers=) to launch() instead",
        "threads_per_worker": "pass cores= to launch() instead",
        "memory_limit": "pass memory= to launch() instead",
        "security": "pass security= to launch() instead",
        "protocol": "pass security= (True: tls://, False: tcp://) to launch() instead",
        "nthreads": "pass cores= to launch() instead",
    }
    keyword_kinds = {
        "preload": "strings",
        "preload_argv": "strings",
        "preload_nanny": "strings",
        "worker_class": "class",
        "silence_logs": "log-level",
        "processes": "boolean",
        "lifetime": "duration",
        "lifetime_stagger": "duration",
        "death_timeout": "duration",
        "scheduler_kwargs": "scheduler-options",
        "worker_dashboard_address": "dashboard",
        "resources": "mapping",
        "env": "mapping",
        "local_directory": "path",
    }
    #: Keywords that only the scheduler or the cluster object use: with no others, a
    #: cluster started without workers needs no probe worker (see make_cluster).
    cluster_only = frozenset({"scheduler_kwargs", "silence_logs", "asynchronous", "host",
                              "scheduler_port", "name", "processes", "service_kwargs"})

    def cluster_keywords(self) -> set[str]:
        # LocalCluster hands keywords it does not know to each Nanny, which hands them to
        # its Worker: one the Worker rejects fails only inside the worker process.
        accepted = keywords_of(LocalCluster.__init__, Nanny.__init__, Worker.__init__)
        try:  # GPU profiles run dask-cuda's LocalCUDACluster, which takes a few more
            from dask_cuda import LocalCUDACluster
        except ImportError:
            return accepted
        return accepted | keywords_of(LocalCUDACluster.__init__)

    def spawns_processes(self, request: ClusterRequest) -> bool:
        return request.extra.get("processes", True) is not False

    def right_size(self, request: ClusterRequest) -> tuple[Profile, list[str]]:
        machine = this_machine()
        p = request.profile
        notes: list[str] = []
        n = max(1, request.workers or request.max_workers or request.min_workers or 1)
        reserve = float(config.get("local.reserve-memory"))
        usable = int(machine.memory * (1 - reserve))
        if usable // n < MIN_WORKER_MEMORY <= usable:
            field = next(f for f, v in (("workers", request.workers), ("max_workers", request.max_workers),
                                        ("min_workers", request.min_workers)) if v == n)
            most = usable // MIN_WORKER_MEMORY
            raise PacklabError(
                f"{field}={n} is more workers than this machine can hold: its "
                f"{format_bytes(usable)} of usable memory leaves {format_bytes(usable // n)} per worker, "
                f"less than the {format_bytes(MIN_WORKER_MEMORY)} one worker needs. Ask at most "
                f"{field}={most} here, or use backend='slurm'.", field=field, value=n,
            )
        if usable < MIN_WORKER_MEMORY:
            raise PacklabError(
                f"packlab.local.reserve-memory={reserve!r} leaves {format_bytes(max(usable, 0))} of this "
                f"machine's {format_bytes(machine.memory)} for {n} worker(s), less than the "
                f"{format_bytes(MIN_WORKER_MEMORY)} one worker needs: set it to a fraction such as 0.1.",
                field="packlab.local.reserve-memory", value=reserve,
            )

        cores = p.cores
        if n * cores > machine.cpus:
            cores = max(1, machine.cpus // n)
            # At one thread per worker there is nothing left to clamp: say what it means.
            outcome = (
                f"using {cores} thread(s) per worker" if cores < p.cores
                else "the workers will share the CPUs"
            )
            notes.append(
                f"profile {p.name!r} asks {p.cores} cores per worker x {n} workers, but this "
                f"machine has {machine.cpus} CPUs: {outcome}."
            )
        memory = p.memory
        if n * memory > usable:
            memory = usable // n
            notes.append(
                f"profile {p.name!r} asks {format_bytes(p.memory)} per worker x {n} workers, but "
                f"this machine has {format_bytes(machine.memory)}: using {format_bytes(memory)} "
                "per worker."
            )
        gpus, gpu_notes = clamp_gpus(
            request, machine.gpus, "this machine",
            "use gpus=0 here, or backend='slurm' with a GPU partition.",
        )
        notes += gpu_notes
        return p.with_overrides(cores=cores, memory=memory, gpus=gpus), notes

    def make_cluster(self, request: ClusterRequest, profile: Profile, security: Security | None):
        """A ``LocalCluster`` whose first workers start inside the constructor.

        So a worker that cannot start raises its cause here instead of leaving launch()
        waiting for it. A cluster asked to start with no workers (``workers=0``, or adaptive
        from ``min_workers=0``) but given keywords that reach the workers starts one probe
        worker all the same, and stops it once it runs: a keyword value that no worker can
        start with is then an error at launch, not a hang at the first task.
        """
        extra = dict(request.extra)
        probe = request.initial_workers == 0 and bool(set(extra) - self.cluster_only)
        kwargs = dict(
            n_workers=request.initial_workers or int(probe),
            threads_per_worker=profile.cores,
            memory_limit=profile.memory,
            dashboard_address=request.dashboard_address,
            security=security,
        )
        if self.spawns_processes(request):
            # The parent stops the workers; Ctrl-C to the process group must not (see module).
            kwargs["preload"] = [*extra.pop("preload", []), "packlab.clusters.worker_setup"]
        if security is not None:
            kwargs["protocol"] = "tls://"
        if profile.gpus:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError:
                raise PacklabError(
                    "GPU workers need the gpu extra: pip install 'packlab[gpu]' "
                    "(installs dask-cuda and CuPy for CUDA 12)."
                ) from None
            kwargs.pop("threads_per_worker")
            kwargs.pop("n_workers")
            # One worker per GPU; the GPU resource lets work be routed to them.
            return LocalCUDACluster(
                threads_per_worker=profile.cores, resources={"GPU": 1}, **kwargs, **extra
            )
        before = set(SpecCluster._instances)
        try:
            cluster = LocalCluster(**kwargs, **extra)
        except Exception as e:
            # Whatever failed (a starting worker, a keyword's value): close what the
            # constructor left running, and say which of the user's choices to check.
            for leaked in set(SpecCluster._instances) - before:
                with contextlib.suppress(Exception):
                    leaked.close()
            cause: BaseException = e
            while cause.__cause__ is not None:  # Dask's wrappers: "Cluster failed to start" ...
                cause = cause.__cause__
            raise ClusterStartError(
                f"the local cluster could not start: {type(cause).__name__}: {str(cause).rstrip('.')}. "
                + _suspects(request, security)
            ) from e
        if probe:
            cluster.scale(request.initial_workers)
        return cluster


def _suspects(request: ClusterRequest, security: Security | None) -> str:
    """What to check, from what the user chose beyond packlab's defaults."""
    if request.extra:
        names = ", ".join(f"{k}=" for k in sorted(request.extra))
        return f"Check the keywords passed on to Dask ({names})."
    if isinstance(request.security, Security):
        return ("Check the distributed.Security given as security= (its certificate and key files), "
                "or pass security=True for packlab's temporary certificates.")
    return "Nothing packlab was given explains it: the error above is Dask's own."
