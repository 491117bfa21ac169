"""The local backend: Dask's ``LocalCluster`` (or dask-cuda's ``LocalCUDACluster``)."""

from __future__ import annotations

from distributed import LocalCluster, Security

from .. import config
from ..errors import PacklabError
from ..profiles import Profile
from ..resources import this_machine
from ..units import format_bytes
from .base import Backend, ClusterRequest, clamp_gpus, register_backend


@register_backend
class LocalBackend(Backend):
    """Worker processes on this machine, sized from the profile and clamped to it."""

    name = "local"

    def right_size(self, request: ClusterRequest) -> tuple[Profile, list[str]]:
        machine = this_machine()
        p = request.profile
        notes: list[str] = []
        n = max(1, request.workers or request.max_workers or request.min_workers or 1)
        usable = int(machine.memory * (1 - float(config.get("local.reserve-memory"))))

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
            n_workers=0,
            threads_per_worker=profile.cores,
            memory_limit=profile.memory,
            dashboard_address=extra.pop("dashboard_address", ":0"),
            security=security,
        )
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
        return LocalCluster(**kwargs, **extra)
