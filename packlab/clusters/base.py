"""The cluster abstractions: a validated request, a backend interface, PackCluster.

A *backend* says where capacity comes from (this machine, SLURM, ...). It is a
small class registered by name; :func:`packlab.launch` looks it up, so adding a
backend never touches an if/elif chain.
"""

from __future__ import annotations

import abc
import html
import inspect
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlparse

from distributed import Client, Security
from distributed.deploy import Cluster

from .. import checks, config
from ..errors import PacklabError, PacklabRuntimeError, PacklabWarning
from ..plugins import Registry
from ..profiles import Profile
from ..units import format_bytes
from ._dask_compat import adaptive_of
from .adaptive import CooldownAdaptive
from .security import LOOPBACK_DASHBOARD, make_security  # noqa: F401  (re-exported)


class ClusterStartError(PacklabRuntimeError):
    """The cluster's first workers could not start; the message carries the cause."""


class ClusterClosed(PacklabRuntimeError):
    """The cluster was closed (from code, or it died): it cannot be scaled or waited on."""


@dataclass
class ClusterRequest:
    """Everything :func:`packlab.launch` was asked for, validated and resolved."""

    backend: str
    profile: Profile
    workers: int | None = None
    min_workers: int | None = None
    max_workers: int | None = None
    cooldown: float = 60.0
    spot: bool = False
    partition: str | None = None
    account: str | None = None
    security: bool | Security = True
    gpus_explicit: bool = False  # gpus= given by the user (an error if unmet), not by the profile
    dashboard_address: str = LOOPBACK_DASHBOARD
    wait: bool | float = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def adaptive(self) -> bool:
        return self.min_workers is not None or self.max_workers is not None

    @property
    def initial_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return self.min_workers or 0


@dataclass(frozen=True)
class JobRecord:
    """One batch job of a cluster's workers as its scheduler accounts for it.

    ``tres`` is the job's allocation as ``key=value`` pairs (SLURM's TRES form, e.g.
    ``"cpu=4,mem=16G,billing=6"``): its ``billing`` is the service units one hour of the
    job costs. ``submitted`` is epoch seconds (``None``: unknown), ``elapsed`` its run
    time so far in seconds.
    """

    job_id: str
    state: str
    partition: str | None
    tres: str
    submitted: float | None
    elapsed: float


class JobAccounting(abc.ABC):
    """How a batch scheduler reports a cluster's worker jobs (a backend's
    :meth:`Backend.accounting`): telemetry records them, prices their service units and
    the advisor reads their states, whatever the scheduler."""

    #: The scheduler's name, as a user knows it ("SLURM").
    scheduler: ClassVar[str]
    #: States in which a job may still change (the last read waits for them to end).
    active_states: ClassVar[frozenset[str]] = frozenset()

    def available(self) -> bool:
        """Whether the scheduler's commands are here (else nothing is read)."""
        return True

    @abc.abstractmethod
    def read(self, job_ids: Iterable[str]) -> list[JobRecord]:
        """The jobs ``job_ids`` as the scheduler reports them now (forgotten ones left out)."""


class Backend(abc.ABC):
    """Where workers come from. Subclasses set ``name`` and implement three methods.

    ``reserved`` maps each keyword of the Dask cluster class that packlab sets itself to
    what to do instead (``"pass cores= to launch() instead"``); :meth:`cluster_keywords` lists
    the keywords that class accepts, so a misspelt or foreign one is refused before
    anything starts (Dask would only log it from a worker that never comes up).
    """

    name: ClassVar[str]
    #: What the backend is, completing "NAME ..." in a list of backends
    #: (``"runs on this machine"``).
    summary: ClassVar[str] = ""
    reserved: ClassVar[dict[str, str]] = {}
    #: The kind (a key of :data:`.keywords.KINDS`) of each cluster keyword whose value
    #: packlab checks before anything starts.
    keyword_kinds: ClassVar[dict[str, str]] = {}
    #: Which of launch()'s placement arguments (``spot``, ``partition``, ``account``)
    #: mean something here; any other one given is refused, never silently ignored.
    placement: ClassVar[frozenset[str]] = frozenset()

    def cluster_keywords(self) -> set[str] | None:
        """Keywords the backend's Dask cluster class accepts (``None``: do not check)."""
        return None

    def spawns_processes(self, request: ClusterRequest) -> bool:
        """True if workers are processes of this machine that re-import the main script."""
        return False

    def start_failure(self, cluster: Cluster) -> str | None:
        """While :func:`launch` waits for the first workers: why one of them can no longer
        come (its job ended before its worker connected), or ``None``."""
        return None

    def check_started(self, cluster: Cluster) -> None:  # noqa: B027 - optional hook
        """After the first ``scale``: raise :class:`ClusterStartError` if its workers could
        not even be started (e.g. the batch system refused the job)."""

    def check_available(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`~packlab.errors.BackendUnavailable` if this backend cannot run here."""

    def accounting(self) -> JobAccounting | None:
        """How the scheduler reports this backend's worker jobs (``None``: no batch jobs)."""
        return None

    @abc.abstractmethod
    def right_size(self, request: ClusterRequest) -> tuple[Profile, list[str]]:
        """The per-worker profile this backend can really give, and notes on any clamping."""

    @abc.abstractmethod
    def make_cluster(
        self, request: ClusterRequest, profile: Profile, security: Security | None
    ) -> Cluster:
        """Start a Dask deploy ``Cluster`` for the request, with no workers yet."""


def clamp_gpus(request: ClusterRequest, available: int, where: str, fix: str) -> tuple[int, list[str]]:
    """GPUs per worker given ``available`` per machine/node.

    A profile's GPUs that are not there are dropped with a note (the work runs on CPU);
    GPUs the user asked for explicitly are an error naming ``where`` and the ``fix``.
    """
    p = request.profile
    if p.gpus <= available:
        return p.gpus, []
    if request.gpus_explicit:
        raise PacklabError(f"gpus={p.gpus} is more than {where} has ({available} GPU(s)): {fix}",
                           field="gpus", value=p.gpus)
    return 0, [f"profile {p.name!r} asks {p.gpus} GPU(s) per worker; {where} has {available}: "
               "running on CPU."]


#: The cluster backends, by name: the built-in ones register in code (``@register_backend``),
#: others through the entry-point group ``packlab.backends`` (see CONTRIBUTING.md).
BACKENDS: Registry[type[Backend]] = Registry("backend", "packlab.backends", invalid=True)


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend available to ``launch(backend=cls.name)``."""
    BACKENDS.register(cls.name, cls)
    return cls


def check_backend(value: object, field: str = "backend") -> str:
    """``value`` if it names a registered backend, else an error with a "did you mean"
    and what each backend is."""
    return BACKENDS.check(value, field, fix=_what_each_is)


def _what_each_is() -> str:
    return "; ".join(f"{name} {BACKENDS[name].summary}".strip() for name in BACKENDS.names()) + "."


def get_backend(name: str) -> Backend:
    """Instantiate the backend registered as ``name`` (checked as :func:`check_backend` does)."""
    return BACKENDS[check_backend(name)]()


def keywords_of(*functions: Callable) -> set[str]:
    """The named parameters of ``functions`` (not ``self``, ``*args`` or ``**kwargs``).

    Examples
    --------
    >>> sorted(keywords_of(lambda a, *, b=1, **kw: None))
    ['a', 'b']
    """
    names: set[str] = set()
    for fn in functions:
        for p in inspect.signature(fn).parameters.values():
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self":
                names.add(p.name)
    return names


class PackCluster:
    """A running Dask cluster sized from a workload profile.

    Made by :func:`packlab.launch`; use it as a context manager to close it.

    Examples
    --------
    >>> import packlab
    >>> with packlab.launch(workers=1, cores=1, memory="1GiB") as pc:  # doctest: +SKIP
    ...     pc.client.submit(sum, [1, 2]).result()
    3
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        backend: str,
        profile: Profile,
        security: Security | None,
        cooldown: float,
        notes: list[str],
        name: str | None = None,
        dashboard_host: str | None = None,
    ):
        self.cluster = cluster
        # Where the dashboard listens when that is one address (127.0.0.1 by default):
        # Dask's own link names the scheduler's host, which differs once the scheduler
        # listens on a network interface (interface=, SLURM clusters).
        self._dashboard_host = dashboard_host if dashboard_host not in {None, "", "0.0.0.0"} else None
        #: The name in the owner-only registry (:func:`packlab.connect` finds it by it).
        self.name = name
        self.backend = backend
        self.profile = profile
        self.security = security
        self.cooldown = cooldown
        self.notes = notes
        self._client: Client | None = None
        self._adaptive: CooldownAdaptive | None = None
        #: Where this cluster's telemetry goes (a packlab.telemetry.collect.ClusterTelemetry,
        #: set by telemetry's cluster hook), or ``None`` when launched with ``telemetry=False``.
        self.telemetry: Any = None
        self._attachments: list[Any] = []
        self._registered = False

    # -- access ---------------------------------------------------------------
    @property
    def client(self) -> Client:
        """A ``distributed.Client`` connected to this cluster (made on first use)."""
        if self._client is None:
            self._client = Client(self.cluster, security=self.security)
        return self._client

    @property
    def scheduler_address(self) -> str:
        return self.cluster.scheduler_address

    @property
    def dashboard_link(self) -> str:
        """The dashboard's URL, on the address it really listens on."""
        link = self.cluster.dashboard_link
        if self._dashboard_host is None:
            return link
        parts = urlparse(link)
        return parts._replace(netloc=f"{self._dashboard_host}:{parts.port}").geturl()

    @property
    def workers(self) -> int:
        """Workers connected to the scheduler now."""
        return len(self.cluster.scheduler_info.get("workers", {}))

    @property
    def closed(self) -> bool:
        """True once the cluster is closing, closed or failed (closed from code, or died)."""
        return self.cluster.status.name in ("closing", "closed", "failed")

    @property
    def adaptive(self) -> CooldownAdaptive | None:
        """The running adaptive controller, or ``None`` for a fixed size."""
        return self._adaptive

    # -- sizing ---------------------------------------------------------------
    def scale(self, n: int) -> None:
        """Ask for exactly ``n`` workers (stops adaptive scaling)."""
        checks.integer(n, "scale(n)", minimum=0, fix="e.g. pc.scale(2); pc.scale(0) stops every worker.")
        self._check_open("scale")
        self._stop_adaptive()
        self.cluster.scale(n)

    def adapt(
        self,
        minimum: int = 0,
        maximum: int | None = None,
        cooldown: str | float | None = None,
    ) -> CooldownAdaptive:
        """Scale between ``minimum`` and ``maximum`` workers with Dask's ``Adaptive``.

        ``minimum=0`` scales to zero when idle. ``cooldown`` (default: the one given
        to :func:`launch`) stops a scale-down from following a scale-up too soon,
        and the reverse.
        """
        lo, hi = validate_bounds(minimum, maximum, names=("minimum", "maximum"))
        cool = self.cooldown if cooldown is None else checks.duration(cooldown, "cooldown")
        self._check_open("adapt")
        self._stop_adaptive()
        # interval and wait_count: Dask's own distributed.adaptive.* settings apply.
        self._adaptive = self.cluster.adapt(
            Adaptive=CooldownAdaptive, minimum=lo, maximum=hi, cooldown=cool
        )
        self.cooldown = cool
        return self._adaptive

    def wait_for_workers(self, n: int, timeout: float | str | None = None) -> None:
        """Block until ``n`` workers are connected (``timeout`` seconds or "1m").

        Stops at once with :class:`ClusterStartError`, carrying the cause, when the backend
        sees that a worker being waited for can no longer come (on SLURM: its job ended
        before its worker connected, e.g. a bad ``worker_extra_args``), also for workers
        that an adaptive cluster asked for after launch.
        """
        checks.integer(n, "wait_for_workers(n)", minimum=1, fix="e.g. pc.wait_for_workers(2).")
        if timeout is not None:
            timeout = checks.duration(timeout, "timeout", allow_zero=False)
        self._check_open("wait_for_workers")
        impl = BACKENDS[self.backend]() if self.backend in BACKENDS else None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 1.0 if deadline is None else deadline - time.monotonic()
            try:
                self.client.wait_for_workers(n, timeout=max(0.1, min(1.0, left)))
                return
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
            why = impl.start_failure(self.cluster) if impl is not None else None
            if why:
                raise ClusterStartError(why)

    def _check_open(self, action: str) -> None:
        if self.closed:
            raise ClusterClosed(
                f"pc.{action}(): this {self.backend} cluster is {self.cluster.status.name} and cannot "
                "change or wait any more: start a new one with packlab.launch()."
            )

    def _stop_adaptive(self) -> None:
        if self._adaptive is not None:
            self._adaptive.stop(reason="packlab-scale")
            self._adaptive = None
        # Dask's Cluster.adapt keeps its own reference too (set if adapt() was called on it).
        adaptive = adaptive_of(self.cluster)
        if adaptive is not None:
            adaptive.stop(reason="packlab-scale")

    # -- lifecycle ------------------------------------------------------------
    def _register(self, generated: bool = False) -> None:
        """Record this running cluster in the owner-only registry (:mod:`.registry`).

        A generated name that another process took meanwhile is replaced; a registry that
        cannot be written (an unusable ``~/.packlab``) is warned about, not fatal: the
        cluster runs, only :func:`packlab.connect` cannot find it.
        """
        from . import registry

        for _ in range(5):
            if self.name is None or self._registered:
                return
            try:
                registry.register(self, self.name)
                self._registered = True
                return
            except registry.NameTaken:
                if not generated:
                    raise
                self.name = registry.new_name()
            except (OSError, PacklabError) as e:
                warnings.warn(f"cluster {self.name!r} is not recorded in ~/.packlab/clusters ({e}): "
                              "packlab.connect() and JupyterLab's sidebar will not find it.",
                              PacklabWarning, stacklevel=3)
                return

    def attach(self, obj: Any) -> None:
        """Close ``obj`` with this cluster: ``obj.close()`` before the cluster shuts down,
        ``obj.after_close()`` once it has (see :mod:`packlab.hooks`)."""
        self._attachments.append(obj)

    def close(self) -> None:
        """Remove it from the registry, stop adaptive scaling, disconnect the client and
        shut the cluster down."""
        if self._registered:
            from . import registry

            self._registered = False
            registry.unregister(self.name)
        self._stop_adaptive()
        for a in self._attachments:  # first: telemetry's last samples go out while the scheduler runs
            a.close()
        if self._client is not None:
            self._client.close()
            self._client = None
        self.cluster.close()
        for a in self._attachments:
            a.after_close()

    def __enter__(self) -> PackCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repr_html_(self) -> str:
        """A notebook's view: backend, profile, workers, cores, memory, dashboard link."""
        info = self.cluster.scheduler_info.get("workers", {}) if not self.closed else {}
        threads = sum(w.get("nthreads", 0) for w in info.values())
        memory = sum(w.get("memory_limit", 0) or 0 for w in info.values())
        link = html.escape(self.dashboard_link) if not self.closed else ""
        rows = [
            ("Name", html.escape(self.name or "-")),
            ("Backend", html.escape(self.backend)),
            ("Profile", html.escape(self.profile.summary())),
            ("Workers", f"{len(info)} ({html.escape(self._mode())})"),
            ("Cores", str(threads)),
            ("Memory", format_bytes(memory)),
            ("Scheduler", html.escape(self.scheduler_address) if not self.closed else "closed"),
            ("Dashboard", f'<a href="{link}" target="_blank">{link}</a>' if link else "-"),
            ("Security", "TLS" if self.security is not None else "none (plain TCP)"),
        ]
        body = "".join(
            f'<tr><th style="text-align:left">{k}</th><td style="text-align:left">{v}</td></tr>'
            for k, v in rows
        )
        return (f'<div class="packlab-cluster"><strong>PackCluster</strong>'
                f"<table>{body}</table></div>")

    def _mode(self) -> str:
        if self._adaptive is not None:
            return f"adaptive {self._adaptive.minimum}..{self._adaptive.maximum}"
        return "fixed"

    def __repr__(self) -> str:
        return (
            f"<PackCluster {self.name} backend={self.backend} profile={self.profile.name} "
            f"workers={self.workers} ({self._mode()}) {self.scheduler_address}>"
        )


def validate_bounds(
    minimum: int | None, maximum: int | None, names: tuple[str, str] = ("min_workers", "max_workers")
) -> tuple[int, int | float]:
    """Check adaptive bounds: whole numbers, 0 <= minimum <= maximum, maximum >= 1.

    A missing maximum is ``packlab.adaptive.maximum`` (never unbounded: on SLURM every
    worker is a batch job). ``names`` are the fields as the caller knows them.
    """
    lo_name, hi_name = names
    lo = 0 if minimum is None else checks.integer(minimum, lo_name, minimum=0)
    if maximum is None:
        return lo, max(lo, int(config.get("adaptive.maximum")))
    checks.integer(maximum, hi_name, minimum=1)
    if lo > maximum:
        raise PacklabError(
            f"{lo_name}={lo} is greater than {hi_name}={maximum}: "
            f"set {lo_name} <= {hi_name}.", field=lo_name, value=lo,
        )
    return lo, maximum


def warn_notes(notes: list[str]) -> None:
    """Tell the user, once each, what packlab changed from what they asked."""
    for note in notes:
        warnings.warn(note, PacklabWarning, stacklevel=3)
