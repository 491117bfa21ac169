"""``ClusterLauncher``: start, resize and stop a packlab cluster from a notebook.

The widget only wires form fields and buttons to :func:`packlab.launch` and
:class:`~packlab.clusters.PackCluster`; what the form means is in :mod:`.forms`,
and every check is :func:`packlab.launch`'s, so errors read the same as in Python.
"""

from __future__ import annotations

import html
import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from .. import checks, config
from ..clusters import BACKENDS, PackCluster
from ..clusters.base import check_backend
from ..clusters.launch import launch, prepare
from ..errors import PacklabError, PacklabRuntimeError, PacklabWarning
from ..profiles import PROFILES
from ..units import format_money, format_walltime
from .forms import launch_arguments, scale_action

logger = logging.getLogger(__name__)

CostSource = Callable[[PackCluster], "float | str | None"]

_NO_TELEMETRY = "cost: n/a (telemetry not enabled)"


class ClusterLauncher(w.VBox):
    """A notebook form that launches, scales and stops one packlab cluster.

    Every field is a public attribute, so code can fill the form and press the
    buttons (``launcher.max_workers.value = 2; launcher.launch_button.click()``).
    Launch with ``min_workers == max_workers`` starts a fixed-size cluster, otherwise
    an adaptive one; Scale applies the two fields to the running cluster the same way.
    Errors are shown in the widget as one readable line, never raised.

    Parameters
    ----------
    backend, profile : str, optional
        Initial choices (default: ``packlab.backend`` and ``packlab.profile``).
    min_workers, max_workers : int
        Initial worker bounds (equal: a fixed size).
    cost_source : callable, optional
        ``cost_source(cluster) -> float | str | None``: the cost so far, shown in the
        status line (a float is in the ``packlab.pricing`` currency:
        ``$0.12`` for USD). Default: the cluster's telemetry
        (:func:`packlab.telemetry.monitor.cost_so_far`, priced with ``packlab.pricing``);
        for a cluster launched with ``telemetry=False`` the line says
        ``cost: n/a (telemetry not enabled)``.
    refresh_interval : float, str or None
        Time between status refreshes while a cluster runs (seconds, or a duration such
        as ``"5s"``); ``None``: only on actions and :meth:`refresh`.
    show_panel : bool
        Show the live :func:`packlab.ui.panel` under the form once a cluster is up
        (when it has telemetry).
    **launch_kwargs
        Passed to every :func:`packlab.launch` call (e.g. ``cores=1``, ``memory="1GiB"``).

    Attributes
    ----------
    cluster : PackCluster or None
        The running cluster, once launched.

    Examples
    --------
    >>> from packlab.ui import ClusterLauncher
    >>> ui = ClusterLauncher(cores=1, memory="1GiB", refresh_interval=None)
    >>> ui.min_workers.value = ui.max_workers.value = 1
    >>> ui.launch_button.click()
    >>> ui.cluster.wait_for_workers(1, timeout=60)
    >>> ui.refresh()
    >>> "1 worker" in ui.status.value
    True
    >>> ui.stop_button.click()
    >>> ui.cluster is None
    True
    """

    def __init__(
        self,
        *,
        backend: str | None = None,
        profile: str | None = None,
        min_workers: int = 1,
        max_workers: int = 1,
        cost_source: CostSource | None = None,
        refresh_interval: float | None = 2.0,
        show_panel: bool = True,
        **launch_kwargs: Any,
    ):
        # Bad arguments are shown in the widget's error line (and warned), never as a
        # traitlets traceback: the form opens with the default in place of each one.
        # A broken dask config (packlab.security: "off") is one problem too; the form then
        # offers the built-in defaults, and Launch reports it again until it is fixed.
        problems: list[str] = []
        config_ok = _or_default(problems, False, lambda: config.validate() or True)
        backend = _or_default(problems, "local", lambda: check_backend(
            config.get("backend") if backend is None else backend))
        profile_names = _profile_names() if config_ok else list(config.DEFAULTS["packlab"]["profiles"])
        profile = _or_default(problems, "general-batch", lambda: _profile_name(
            config.get("profile") if profile is None else profile, profile_names, config_ok))
        min_workers = _or_default(problems, 1, lambda: checks.integer(min_workers, "min_workers", minimum=0))
        max_workers = _or_default(problems, max(1, min_workers),
                                  lambda: checks.integer(max_workers, "max_workers", minimum=1))
        if min_workers > max_workers:
            problems.append(f"min_workers={min_workers} is greater than max_workers={max_workers}: "
                            "set min_workers <= max_workers.")
            min_workers, max_workers = 1, 1
        refresh_interval = _or_default(problems, 2.0, lambda: checks.optional(
            checks.duration, refresh_interval, "refresh_interval", allow_zero=False))
        if cost_source is not None and not callable(cost_source):
            problems.append(str(checks.bad_value("cost_source", cost_source,
                                                 "a function cost_source(cluster) -> float | str | None")))
            cost_source = None
        self.cost_source = cost_source
        self.refresh_interval = refresh_interval
        self.launch_kwargs = _launch_kwargs(problems, launch_kwargs)
        if config_ok:
            # Checked as launch() checks them, starting nothing (and warning only at Launch).
            _or_default(problems, None, lambda: prepare(
                backend=backend, profile=profile, quiet=True,
                **launch_arguments({"min_workers": min_workers, "max_workers": max_workers}),
                **self.launch_kwargs))
        self._cluster: PackCluster | None = None
        self._lock = threading.RLock()  # buttons and the refresh thread share the state
        self._stop_refresh: threading.Event | None = None

        self.backend = w.Dropdown(options=sorted(BACKENDS), value=backend, description="Backend")
        self.profile = w.Dropdown(options=profile_names, value=profile, description="Profile")
        self.min_workers = w.IntText(value=min_workers, description="Min workers")
        self.max_workers = w.IntText(value=max_workers, description="Max workers")
        self.spot = w.Checkbox(value=False, description="Spot (preemptible)")
        self.gpus = w.IntText(value=_profile_gpus(profile), description="GPUs/worker")
        self.walltime = w.Text(placeholder=self._profile_walltime(), description="Walltime")
        self.partition = w.Text(placeholder="default partition", description="Partition")
        self.launch_button = w.Button(description="Launch", button_style="success", icon="play")
        self.scale_button = w.Button(description="Scale", icon="arrows-v")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop")
        self.status = w.HTML()
        self.notes = w.HTML()
        self.error = w.HTML()
        self.show_panel = show_panel is True
        self.panel = None  # the packlab.ui.panel.Panel of the running cluster
        self.panel_box = w.VBox()

        self.profile.observe(self._on_profile, names="value")
        self.launch_button.on_click(lambda _: self.launch())
        self.scale_button.on_click(lambda _: self.scale())
        self.stop_button.on_click(lambda _: self.stop())

        super().__init__(
            [
                w.HBox([self.backend, self.profile]),
                w.HBox([self.min_workers, self.max_workers]),
                w.HBox([self.gpus, self.spot]),
                w.HBox([self.walltime, self.partition]),
                w.HBox([self.launch_button, self.scale_button, self.stop_button]),
                self.status,
                self.notes,
                self.error,
                self.panel_box,
            ]
        )
        self._sync_buttons()
        self.refresh()
        if problems:
            for p in problems:
                warnings.warn(p, PacklabWarning, stacklevel=2)
            self.error.value = _error_html("; ".join(problems))

    # -- public -----------------------------------------------------------------
    @property
    def cluster(self) -> PackCluster | None:
        """The running :class:`~packlab.clusters.PackCluster`, or ``None``."""
        return self._cluster

    def values(self) -> dict[str, Any]:
        """The form's current values, as :func:`.forms.launch_arguments` reads them."""
        return {
            name: getattr(self, name).value
            for name in ("backend", "profile", "min_workers", "max_workers", "spot", "gpus",
                         "walltime", "partition")
        }

    def launch(self) -> None:
        """Start a cluster from the form (what the Launch button does)."""
        with self._lock, self._reporting("launch"):
            if self._cluster is not None:
                raise PacklabError(
                    "a cluster is already running: press Stop first, or Scale to resize it."
                )
            args = launch_arguments(self.values(), PROFILES[self.profile.value])
            self.notes.value = ""
            with warnings.catch_warnings():
                # The notes are shown in the widget instead of as warnings in the log.
                warnings.simplefilter("ignore", PacklabWarning)
                self._cluster = launch(**args, **self.launch_kwargs)
            if self._cluster.notes:
                items = "".join(f"<li>{html.escape(n, quote=False)}</li>" for n in self._cluster.notes)
                self.notes.value = f"<b>packlab adjusted your request:</b><ul>{items}</ul>"
            self._start_refresh()
            self._show_panel()

    def scale(self) -> None:
        """Apply min/max workers to the running cluster (what the Scale button does)."""
        with self._lock, self._reporting("scale"):
            if self._cluster is None:
                raise PacklabError("no cluster is running: press Launch first.")
            action, kwargs = scale_action(self.min_workers.value, self.max_workers.value)
            getattr(self._cluster, action)(**kwargs)

    def stop(self) -> None:
        """Shut the running cluster down (what the Stop button does)."""
        with self._lock, self._reporting("stop"):
            pc = self._forget_cluster()
            if pc is not None:
                pc.close()

    def refresh(self) -> None:
        """Redraw the status line: backend, profile, workers, cost and dashboard link."""
        with self._lock:
            pc = self._cluster
            if pc is not None and pc.closed:
                # Closed from code (ui.cluster.close()) or died: let the form launch again,
                # and release the client (closing twice is harmless).
                self._forget_cluster()
                pc.close()
            self.status.value = self._status_html()
            self._sync_buttons()

    # -- wiring -----------------------------------------------------------------
    def _reporting(self, action: str) -> _Reporting:
        return _Reporting(self, action)

    def _status_html(self) -> str:
        pc = self._cluster
        if pc is None:
            return "<b>No cluster running.</b> Fill in the form and press Launch."
        try:
            n = pc.workers
            ad = pc.adaptive
            mode = f"adaptive {ad.minimum}..{ad.maximum}" if ad is not None else "fixed"
            link = html.escape(pc.dashboard_link, quote=True)
            parts = [
                f"<b>{html.escape(pc.backend)}</b> cluster",
                f"profile {html.escape(pc.profile.name)}",
                f"{n} worker{'s' if n != 1 else ''} connected ({mode})",
                html.escape(self._cost_text(pc), quote=False),
                f'<a href="{link}" target="_blank">dashboard</a>',
            ]
        except Exception as e:  # a cluster shutting down under us must not break the widget
            logger.warning("packlab launcher: status unavailable", exc_info=True)
            return f"cluster status unavailable: {html.escape(_one_line(e), quote=False)}"
        return " &middot; ".join(parts)

    def _cost_text(self, pc: PackCluster) -> str:
        source = self.cost_source
        if source is None:
            if getattr(pc, "telemetry", None) is None:
                return _NO_TELEMETRY
            from ..telemetry.monitor import cost_so_far as source
        try:
            cost = source(pc)
            if isinstance(cost, (int, float)):  # in the currency of packlab.pricing
                from ..telemetry.pricing import Pricing

                cost = format_money(cost, Pricing.from_config().currency, cents=True, sign=True)
        except Exception:
            logger.warning("packlab launcher: cost_source failed", exc_info=True)
            return "cost: unavailable"
        if cost is None:
            return "cost: n/a"
        return f"cost so far: {cost}"

    def _sync_buttons(self) -> None:
        running = self._cluster is not None
        self.launch_button.disabled = running
        self.scale_button.disabled = not running
        self.stop_button.disabled = not running
        # These only take effect at launch; min/max stay live for Scale.
        for field in (self.backend, self.profile, self.spot, self.gpus, self.walltime, self.partition):
            field.disabled = running

    def _on_profile(self, change: dict) -> None:
        with self._reporting("profile"):
            self.gpus.value = PROFILES[change["new"]].gpus
            self.walltime.placeholder = self._profile_walltime()

    def _profile_walltime(self) -> str:
        try:
            return f"profile: {format_walltime(PROFILES[self.profile.value].walltime)}"
        except PacklabError:  # a broken profile or config: the error line says why
            return "walltime"

    def _show_panel(self) -> None:
        """The live panel under the form (drawn by packlab.ui.panel, which reads the store)."""
        if not self.show_panel or getattr(self._cluster, "telemetry", None) is None:
            return
        try:
            from .panel import panel

            self.panel = panel(self._cluster)
            self.panel_box.children = [self.panel.widget()]
        except Exception as e:  # the cluster is up: a panel that cannot draw is a note, not a failure
            logger.warning("packlab launcher: no panel", exc_info=True)
            self.panel = None
            self.notes.value += f"<i>panel unavailable: {html.escape(_one_line(e), quote=False)}</i>"

    def _forget_cluster(self) -> PackCluster | None:
        pc, self._cluster = self._cluster, None
        if self.panel is not None:
            self.panel.stop()
            self.panel, self.panel_box.children = None, []
        if self._stop_refresh is not None:
            self._stop_refresh.set()
            self._stop_refresh = None
        return pc

    def _start_refresh(self) -> None:
        if not self.refresh_interval:
            return
        stop = self._stop_refresh = threading.Event()
        # A plain daemon thread: it needs nothing from the cluster's event loop, and a
        # cluster that dies only makes refresh() report it.
        threading.Thread(
            target=self._refresh_loop, args=(stop,), name="packlab-launcher-refresh", daemon=True
        ).start()

    def _refresh_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.refresh_interval):
            try:
                self.refresh()
            except Exception:
                logger.warning("packlab launcher: refresh failed", exc_info=True)


class _Reporting:
    """Context manager: clear the error line, then show any exception there instead of raising."""

    def __init__(self, ui: ClusterLauncher, action: str):
        self.ui, self.action = ui, action

    def __enter__(self) -> None:
        self.ui.error.value = ""

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            self.ui.refresh()
            return False
        if not isinstance(exc, Exception):
            return False  # KeyboardInterrupt and friends go on
        if isinstance(exc, (PacklabError, PacklabRuntimeError)):  # bad input, or a state to fix
            message = str(exc)
        else:
            logger.error("packlab launcher: %s failed", self.action, exc_info=(kind, exc, tb))
            message = f"unexpected error during {self.action}: {_one_line(exc)} (details in the log)"
        self.ui.error.value = _error_html(message)
        self.ui.refresh()
        return True


#: The launch() arguments the form itself sets: given as keywords too, they would collide.
_FORM_FIELDS = ("backend", "profile", "workers", "min_workers", "max_workers", "spot", "gpus",
                "walltime", "partition")


def _launch_kwargs(problems: list[str], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` without the ones the form sets, each of those named in ``problems``."""
    for key in [k for k in kwargs if k in _FORM_FIELDS]:
        what = "min_workers= and max_workers= (equal: a fixed size)" if key == "workers" else f"{key}="
        problems.append(f"{key}={kwargs.pop(key)!r} is a field of the form: pass {what} to "
                        "ClusterLauncher(), or set it in the form.")
    return kwargs


def _error_html(message: str) -> str:
    text = html.escape(message, quote=False)
    return f'<span style="color:#b00020">&#9888; {text}</span>'


def _or_default(problems: list[str], default: Any, check: Callable[[], Any]) -> Any:
    """``check()``'s value, or ``default`` with its error message added to ``problems``."""
    try:
        return check()
    except PacklabError as e:
        if str(e) not in problems:  # a broken config fails every read: say it once
            problems.append(str(e))
        return default


def _profile_name(name: object, names: list[str], config_ok: bool) -> str:
    checks.text(name, "profile", fix="Pick one of `packlab profiles`.")
    if config_ok:
        PROFILES[name]  # an unknown or broken profile: packlab's own message
    # the dropdown's spelling: general_batch is general-batch, as dask keys are
    same = [n for n in names if n.replace("_", "-") == name.replace("_", "-")]  # type: ignore[union-attr]
    return same[0] if same else checks.choice(name, "profile", names)


def _profile_names() -> list[str]:
    """The profile names a dropdown can offer (string keys only: the config may hold others)."""
    return [n for n in PROFILES if isinstance(n, str)]


def _profile_gpus(name: str) -> int:
    try:
        return PROFILES[name].gpus
    except PacklabError:
        return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
