"""``packlab.launch``: a right-sized Dask cluster from one call."""

from __future__ import annotations

import warnings
from typing import Any

from distributed import Security

from .. import checks, config, hooks
from ..errors import ConfigError, PacklabError
from ..profiles import PROFILES
from ..resources import MIN_WORKER_MEMORY
from ..units import format_bytes
from . import registry
from .base import (
    BACKENDS,
    Backend,
    ClusterRequest,
    PackCluster,
    check_backend,
    validate_bounds,
    warn_notes,
)
from .keywords import check_backend_kwargs
from .mainguard import unguarded_main_call, workers_reimport_main
from .security import PacklabSecurityWarning, make_security, parse_dashboard_address, security_setting
from .security import dashboard_address as check_dashboard_address


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
    dashboard_address: str | None = None,
    wait: bool | float | str = False,
    store: str | None = None,
    telemetry: bool | None = None,
    name: str | None = None,
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
        Override the profile's per-worker values. ``memory`` is a size such as ``"4GiB"``
        (a bare number is bytes) of at least 256 MiB
        (:data:`packlab.resources.MIN_WORKER_MEMORY`): below that a Dask worker restarts in
        a loop.
    partition, account : str, optional
        SLURM partition and account. An unknown partition is an error listing real ones.
    security : bool or distributed.Security, default from ``packlab.security`` (True)
        TLS between client, scheduler and workers with temporary certificates. On a
        shared login node an open scheduler port would let anyone run code as you:
        ``False`` warns. Anything else (e.g. the string ``"off"``) is an error.
    dashboard_address : str, default from ``packlab.dashboard.address`` ("127.0.0.1:0")
        Where the Dask dashboard listens: this machine only by default. Any other
        address is honoured with a warning (the dashboard has no authentication).
    wait : bool, float or str
        Block until the initial workers connect (``True``: up to 120 s; or a duration).
    store : str, default from ``packlab.telemetry.store``
        The SQLite file the cluster's telemetry is written to (created owner-only), so
        its history outlives it (``packlab.monitor(store)``, ``packlab report --store``).
        None: a private temporary file removed at close. A :class:`packlab.JobQueue`
        opened on the cluster takes it over: its store then holds the jobs and their
        telemetry.
    telemetry : bool, default from ``packlab.telemetry.enabled`` (True)
        Install packlab's telemetry plugin on the scheduler.
    name : str, optional
        The cluster's name in your owner-only registry (``~/.packlab/clusters``), by which
        :func:`packlab.connect` and JupyterLab's packlab sidebar find it while it runs.
        Default: a generated readable one such as ``"brisk-otter"`` (``pc.name``). A name
        that a running cluster of yours has is an error.
    **backend_kwargs
        Passed to the backend's Dask cluster class (e.g. any ``SLURMCluster`` keyword).
        Checked against that class's signature before anything starts; the keywords
        packlab sets itself (``n_workers``, ``threads_per_worker``, ...) are refused
        with the :func:`launch` argument to use instead.

    Raises
    ------
    PacklabError
        Bad input, named with its value and the fix; nothing was started. Also when
        called at the top level of a script without ``if __name__ == "__main__":``
        (local process workers re-import the script).
    ClusterStartError
        The first workers could not start; the message carries their error.

    Examples
    --------
    >>> import packlab
    >>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True) as pc:
    ...     pc.client.submit(sum, [1, 2]).result()
    3
    """
    request, impl = prepare(
        backend=backend, profile=profile, workers=workers, min_workers=min_workers,
        max_workers=max_workers, cooldown=cooldown, spot=spot, gpus=gpus, cores=cores,
        memory=memory, walltime=walltime, partition=partition, account=account,
        security=security, dashboard_address=dashboard_address, wait=wait, **backend_kwargs,
    )
    wait = request.wait
    telemetry = checks.boolean(config.get("telemetry.enabled") if telemetry is None else telemetry,
                               "telemetry")
    hook_options = {"telemetry": telemetry, "store": store, "spot": request.spot}
    hooks.check_cluster_options(hook_options)  # e.g. telemetry's store=, before anything starts
    if name is not None:
        registry.check_free(registry.check_name(name))
    if impl.spawns_processes(request) and workers_reimport_main():
        where = unguarded_main_call(depth=2)
        if where is not None:
            script, line = where
            raise PacklabError(
                f"launch() is called at the top level of {script} (line {line}) without "
                "'if __name__ == \"__main__\":'. Dask starts each worker process by importing "
                "that script again, which would call launch() again in every worker. Put the "
                "code that runs the cluster under 'if __name__ == \"__main__\":' (or in a "
                "function called from there).", field="__main__", value=script,
            )
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
        name=name or registry.new_name(),
        dashboard_host=parse_dashboard_address(request.dashboard_address, "dashboard_address")[0],
    )
    try:
        # Connect now: the client becomes Dask's default, so a plain .compute() right
        # after launch() runs on this cluster rather than on local threads.
        pc.client  # noqa: B018
        hooks.cluster_launched(pc, hook_options)  # telemetry installs its scheduler plugin here
        if request.adaptive:
            pc.adapt(request.min_workers or 0, request.max_workers)
        else:
            pc.scale(request.initial_workers)
        if request.initial_workers:
            impl.check_started(cluster)
        if wait and request.initial_workers:
            pc.wait_for_workers(request.initial_workers, 120.0 if wait is True else float(wait))
        pc._register(generated=name is None)
    except BaseException:
        pc.close()
        raise
    return pc


def prepare(backend: str | None = None, profile: str | None = None, *, quiet: bool = False,
            **arguments: Any) -> tuple[ClusterRequest, Backend]:
    """Check every argument of :func:`launch` as it does, and start nothing.

    Returns the validated request and its backend. The warnings that a valid request
    gets (security off, a dashboard open to others) come last, so that a request that
    is refused is only refused; ``quiet=True`` checks without giving them (the notebook
    launcher checks its keywords when it opens, and warns when it launches).

    Examples
    --------
    >>> request, impl = prepare(workers=2, cores=1, memory="1GiB")
    >>> request.workers, impl.name
    (2, 'local')
    """
    wait = arguments.pop("wait", False)
    security = arguments.pop("security", None)
    dashboard_address = arguments.pop("dashboard_address", None)
    named = {k: arguments.pop(k, None) for k in _ARGUMENTS}
    named["spot"] = named["spot"] or False
    try:
        request = _request(
            backend=config.get("backend") if backend is None else backend,
            profile=config.get("profile") if profile is None else profile,
            **named,
            extra=arguments,
        )
    except PacklabError as e:
        if e.field in ("backend", "profile") and {"backend": backend, "profile": profile}[e.field] is None:
            # The name came from the settings, not from the call: say where it was set.
            setting = f"packlab.{e.field}"
            raise config.with_origin(PacklabError(str(e).replace(f"{e.field}=", f"{setting}=", 1),
                                                  field=setting, value=e.value)) from None
        raise
    if not isinstance(wait, bool):
        wait = checks.duration(wait, "wait", allow_zero=False)
    request.wait = wait
    impl = BACKENDS[request.backend]()
    request.extra, dashboards = check_backend_kwargs(impl, request.extra)
    _check_placement(impl, request)
    # Last, so that their warnings (security off, a dashboard open to all) come only with
    # a request that is otherwise valid.
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore", PacklabSecurityWarning)
        request.security = (security_setting(config.get("security"), "packlab.security")
                            if security is None else security_setting(security))
        request.dashboard_address = check_dashboard_address(dashboard_address)
        for field, value in dashboards.items():
            if dashboard_address is not None and value != dashboard_address:
                raise PacklabError(
                    f"{field}={value!r} and dashboard_address={dashboard_address!r} were both given: "
                    "pass only dashboard_address= to launch().", field=field, value=value)
            if field.startswith(("scheduler_kwargs", "scheduler_options")):
                request.dashboard_address = check_dashboard_address(value, field)
            else:
                check_dashboard_address(value, field)
    return request, impl


_ARGUMENTS = ("workers", "min_workers", "max_workers", "cooldown", "spot", "gpus", "cores", "memory",
              "walltime", "partition", "account")


def _check_placement(impl: Backend, request: ClusterRequest) -> None:
    """``spot``/``partition``/``account`` only where the backend has them: never ignored."""
    for name in ("spot", "partition", "account"):
        value = getattr(request, name)
        if value in (None, False) or name in impl.placement:
            continue
        having = sorted(n for n, cls in BACKENDS.items() if name in cls.placement)
        noun = {"spot": "preemptible (spot) capacity", "partition": "partitions", "account": "accounts"}[name]
        use = f"pass backend={having[0]!r}" if having else "no registered backend has them"
        raise PacklabError(
            f"{name}={value!r} needs backend={having[0] if having else None!r}: backend={impl.name!r} has no "
            f"{noun} and would ignore it. Remove {name}=, or {use}.",
            field=name, value=value,
        )


def _request(*, backend, profile, workers, min_workers, max_workers, cooldown, spot, gpus,
             cores, memory, walltime, partition, account, extra) -> ClusterRequest:
    """Validate every argument of :func:`launch`, naming the field and the fix on error."""
    check_backend(backend)
    checks.text(profile, "profile", fix=f"choose one of {sorted(PROFILES)}.")
    try:
        base = PROFILES[profile]
    except ConfigError:
        raise
    except PacklabError as e:  # unknown: name the field, so the CLI can name --profile
        raise PacklabError(str(e), field="profile", value=profile) from None
    overrides: dict[str, Any] = {}
    if cores is not None:
        overrides["cores"] = checks.integer(cores, "cores", minimum=1)
    if memory is not None:
        overrides["memory"] = checks.memory(memory, "memory")
    if gpus is not None:
        overrides["gpus"] = checks.integer(gpus, "gpus", minimum=0)
    if walltime is not None:
        overrides["walltime"] = checks.walltime(walltime, "walltime")
    sized = base.with_overrides(**overrides)
    if memory is not None and sized.memory < MIN_WORKER_MEMORY:
        # (a profile's own memory is checked where profiles are read: packlab.profiles)
        raise PacklabError(
            f"memory={memory!r} is {format_bytes(sized.memory)} per worker, less than the "
            f"{format_bytes(MIN_WORKER_MEMORY)} a Dask worker needs (it would restart in a loop): "
            'give a size with its unit, e.g. memory="4GiB" (a bare number is bytes).',
            field="memory", value=memory,
        )

    if workers is not None:
        if min_workers is not None or max_workers is not None:
            raise PacklabError(
                "workers= (a fixed size) and min_workers=/max_workers= (adaptive) were both "
                "given: pass one or the other.", field="workers", value=workers,
            )
        checks.integer(workers, "workers", minimum=0)
    elif min_workers is not None or max_workers is not None:
        min_workers, max_workers = validate_bounds(min_workers, max_workers)
    else:
        workers = 1

    checks.boolean(spot, "spot")
    for name, value in (("partition", partition), ("account", account)):
        checks.optional(checks.text, value, name, fix=f'pass the SLURM {name} name, e.g. {name}="batch".')
    cool = checks.duration(config.get("adaptive.cooldown") if cooldown is None else cooldown, "cooldown")
    return ClusterRequest(
        backend=backend,
        profile=sized,
        workers=workers,
        min_workers=min_workers,
        max_workers=max_workers,
        cooldown=cool,
        spot=spot,
        partition=partition,
        account=account,
        gpus_explicit=bool(overrides.get("gpus")),
        extra=extra,
    )
