"""``packlab.launch``: a right-sized Dask cluster from one call."""

from __future__ import annotations

from typing import Any

from distributed import Security

from .. import config
from ..errors import PacklabError, whole_number
from ..profiles import PROFILES
from ..units import memory_bytes, seconds, walltime_seconds
from .base import ClusterRequest, PackCluster, get_backend, make_security, validate_bounds, warn_notes


def launch(
    backend: str | None = None,
    profile: str | None = None,
    *,
    workers: int | None = None,
    min_workers: int | None = None,
    max_workers: int | None = None,
    cooldown: str | float | None = None,
    spot: bool = False,
    gpus: int | None = None,
    cores: int | None = None,
    memory: str | int | None = None,
    walltime: str | int | None = None,
    partition: str | None = None,
    account: str | None = None,
    security: bool | Security | None = None,
    wait: bool | float = False,
    **backend_kwargs: Any,
) -> PackCluster:
    """Start a Dask cluster sized from a workload profile.

    Parameters
    ----------
    backend : {"local", "slurm"}, default from ``packlab.backend`` ("local")
        Where workers run. Not every job needs HPC: local is the default.
    profile : str, default from ``packlab.profile`` ("general-batch")
        A key of :data:`packlab.PROFILES`: per-worker cores, memory, GPUs, walltime.
    workers : int, optional
        A fixed number of workers. Give this *or* ``min_workers``/``max_workers``.
    min_workers, max_workers : int, optional
        Adaptive bounds; ``min_workers=0`` scales to zero when idle.
    cooldown : str or float, default from ``packlab.adaptive.cooldown`` ("60s")
        No scale-down this soon after a scale-up, and the reverse.
    spot : bool
        SLURM: put workers on the preemptible partition (``packlab.slurm.spot-partition``)
        with ``--requeue``. Lost work is recomputed by Dask.
    gpus, cores, memory, walltime : optional
        Override the profile's per-worker values.
    partition, account : str, optional
        SLURM partition and account. An unknown partition is an error listing real ones.
    security : bool or distributed.Security, default True
        TLS between client, scheduler and workers with temporary certificates. On a
        shared login node an open scheduler port would let anyone run code as you.
    wait : bool or float
        Block until the initial workers connect (``True``: up to 120 s; or seconds).
    **backend_kwargs
        Passed to the backend's Dask cluster class (e.g. any ``SLURMCluster`` keyword).

    Examples
    --------
    >>> import packlab
    >>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
    ...     pc.client.submit(sum, [1, 2]).result()
    3
    """
    request = _request(
        backend=backend or config.get("backend"),
        profile=profile or config.get("profile"),
        workers=workers,
        min_workers=min_workers,
        max_workers=max_workers,
        cooldown=cooldown,
        spot=spot,
        gpus=gpus,
        cores=cores,
        memory=memory,
        walltime=walltime,
        partition=partition,
        account=account,
        security=config.get("security") if security is None else security,
        extra=backend_kwargs,
    )
    impl = get_backend(request.backend)
    impl.check_available()
    sized, notes = impl.right_size(request)
    warn_notes(notes)
    sec = make_security(request.security)
    cluster = impl.make_cluster(request, sized, sec)
    pc = PackCluster(
        cluster,
        backend=request.backend,
        profile=sized,
        security=sec,
        cooldown=request.cooldown,
        notes=notes,
    )
    try:
        # Connect now: the client becomes Dask's default, so a plain .compute() right
        # after launch() runs on this cluster rather than on local threads.
        pc.client  # noqa: B018
        if request.adaptive:
            pc.adapt(request.min_workers or 0, request.max_workers)
        else:
            pc.scale(request.initial_workers)
        if wait and request.initial_workers:
            pc.wait_for_workers(request.initial_workers, timeout=120 if wait is True else wait)
    except BaseException:
        pc.close()
        raise
    return pc


def _request(*, backend, profile, workers, min_workers, max_workers, cooldown, spot, gpus,
             cores, memory, walltime, partition, account, security, extra) -> ClusterRequest:
    """Validate every argument of :func:`launch`, naming the field and the fix on error."""
    base = PROFILES[profile]
    overrides: dict[str, Any] = {}
    if cores is not None:
        overrides["cores"] = whole_number(cores, "cores", minimum=1)
    if memory is not None:
        overrides["memory"] = memory_bytes(memory, "memory")
    if gpus is not None:
        overrides["gpus"] = whole_number(gpus, "gpus")
    if walltime is not None:
        overrides["walltime"] = walltime_seconds(walltime, "walltime")

    if workers is not None:
        if min_workers is not None or max_workers is not None:
            raise PacklabError(
                "workers= (a fixed size) and min_workers=/max_workers= (adaptive) were both "
                "given: pass one or the other."
            )
        whole_number(workers, "workers")
    elif min_workers is not None or max_workers is not None:
        min_workers, max_workers = validate_bounds(min_workers, max_workers)
    else:
        workers = 1

    if not isinstance(spot, bool):
        raise PacklabError(f"spot={spot!r} is invalid: expected True or False.")
    if spot and backend == "local":
        raise PacklabError(
            "spot=True needs backend='slurm': spot capacity is a preemptible SLURM partition."
        )
    cool = seconds(config.get("adaptive.cooldown") if cooldown is None else cooldown, "cooldown")
    return ClusterRequest(
        backend=backend,
        profile=base.with_overrides(**overrides),
        workers=workers,
        min_workers=min_workers,
        max_workers=max_workers,
        cooldown=cool,
        spot=spot,
        partition=partition,
        account=account,
        security=security,
        gpus_explicit=bool(overrides.get("gpus")),
        extra=extra,
    )
