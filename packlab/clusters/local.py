"""The local backend: Dask's ``LocalCluster`` (or dask-cuda's ``LocalCUDACluster``)."""

from __future__ import annotations

from distributed import LocalCluster, Nanny, Security, Worker

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
    reserved = {
        "n_workers": "workers= (or min_workers=/max_workers=)",
        "threads_per_worker": "cores=",
        "memory_limit": "memory=",
        "security": "security=",
        "protocol": "security= (True: tls://, False: tcp://)",
    }

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
        if usable // n < MIN_WORKER_MEMORY:
            raise PacklabError(
                f"packlab.local.reserve-memory={reserve!r} leaves {format_bytes(max(usable, 0))} of this "
                f"machine's {format_bytes(machine.memory)} for {n} worker(s), less than the "
                f"{format_bytes(MIN_WORKER_MEMORY)} one worker needs: set it to a fraction such as 0.1, "
                "or ask fewer workers.", field="packlab.local.reserve-memory", value=reserve,
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
        extra = dict(request.extra)
        kwargs = dict(
            # The first workers start inside the constructor, so one that cannot start
            # raises its cause here instead of leaving launch() waiting for it.
            n_workers=request.initial_workers,
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
        try:
            return LocalCluster(**kwargs, **extra)
        except RuntimeError as e:
            # Dask's own wrappers ("Nanny failed to start.", "Cluster failed to start: ...")
            # around what failed in a starting worker; anything else goes up as it is.
            if "failed to start" not in str(e) or e.__cause__ is None:
                raise
            cause = e.__cause__
            raise ClusterStartError(
                f"the local cluster could not start its first workers: {type(cause).__name__}: "
                f"{cause}. Check the keywords passed on to Dask (the worker's own error is above)."
            ) from e
