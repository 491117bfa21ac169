"""In-stage checkpoints: ``ctx.save(state)`` / ``ctx.load()`` for long stages.

A stage that names a ``ctx`` parameter receives a :class:`Context`. What it saves is
written atomically (temporary name, fsync, rename) to ``ctx/<stage>/<key>.pkl`` under
the checkpoint directory, so a worker killed at any instant leaves the last whole save.
When the stage runs again after its worker was lost (SIGKILL, a preempted or timed-out
SLURM job, a retry), ``ctx.load()`` returns that state and ``ctx.resumed`` is true. The
state is removed once the stage's output checkpoint is written; it is keyed by the stage's
cache key, so changed code never resumes from the state of the old code.

Warnings before a kill
----------------------
SLURM sends ``SIGTERM`` to a job's processes before it kills them (at preemption, with
the partition's ``GraceTime``; at the walltime, ``KillWait`` seconds before), and
``--signal=USR1@60`` asks for ``SIGUSR1`` a minute before the walltime. On every worker
the pipeline runs on, packlab installs a handler for ``SIGTERM``, ``SIGUSR1`` and
``SIGUSR2`` (a Dask worker plugin; installed only where the worker's event loop runs in
the process's main thread, as it does under ``dask worker`` and a nanny). On a signal it

1. sets ``ctx.preempted`` (a stage that checks it can save and return early, or stop),
2. calls, in the signal handler, each running stage's ``ctx.autosave(getter)`` function and
   saves what it returns (best effort: a getter that raises is logged and skipped), then
3. hands the signal to the handler that was there before (Dask's graceful shutdown for
   ``SIGTERM``; for a signal whose action was the default, that default: the process ends).

A stage without ``autosave`` keeps its last explicit ``ctx.save``. Nothing can be done on
``SIGKILL`` itself; the last save is what survives.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import stat
import threading
from typing import Any

import cloudpickle
from distributed.diagnostics.plugin import WorkerPlugin

from ..files import atomic_write

log = logging.getLogger("packlab.pipeline")

_preempted = threading.Event()
_running: set[Context] = set()
_lock = threading.Lock()
WARNING_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")


class Context:
    """What a running stage (or fan-out element) uses to save and reload its own state.

    Examples
    --------
    >>> import tempfile, os
    >>> ctx = Context(os.path.join(tempfile.mkdtemp(), "s.pkl"), "train")
    >>> ctx.load("fresh"), ctx.resumed
    ('fresh', False)
    >>> ctx.save({"epoch": 3})
    >>> Context(ctx.path, "train").load()
    {'epoch': 3}
    """

    def __init__(self, path: str, stage: str, index: int | None = None):
        self.path = path
        self.stage = stage
        self.index = index
        self.saves = 0
        self.resumed = _regular(path)
        self._getter = None

    @property
    def preempted(self) -> bool:
        """True once this worker was warned it will be stopped (SIGTERM/SIGUSR1/SIGUSR2)."""
        return _preempted.is_set()

    def save(self, state: Any) -> None:
        """Save ``state`` (anything cloudpickle can pickle), replacing the last save atomically."""
        from .checkpoints import private_subdir

        private_subdir(os.path.dirname(self.path))  # never through a planted link
        atomic_write(self.path, write=lambda f: cloudpickle.dump(state, f, protocol=5), durable=True)
        self.saves += 1

    def load(self, default: Any = None) -> Any:
        """The last saved state, or ``default`` when nothing was saved (or it is unreadable)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return default
        except OSError as e:  # ELOOP: a link planted there is never read (unpickling runs code)
            log.warning("stage %s: saved state %s is not a plain file (%s); starting from the default",
                        self.stage, self.path, e.strerror)
            return default
        try:
            with os.fdopen(fd, "rb") as f:
                return pickle.load(f)
        except Exception as e:  # a state from other code that no longer unpickles: start over
            log.warning("stage %s: saved state %s is unreadable (%s); starting from the default",
                        self.stage, self.path, e)
            return default

    def autosave(self, getter) -> None:
        """Register ``getter()``, returning the state to save when the worker is warned of a
        kill (see the module docs); ``None`` unregisters it."""
        self._getter = getter

    def clear(self) -> None:
        """Remove the saved state (done once the stage's output is checkpointed)."""
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Context:
        with _lock:
            _running.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            _running.discard(self)

    def __repr__(self) -> str:
        return f"<Context stage={self.stage} index={self.index} saves={self.saves} resumed={self.resumed}>"


def _regular(path: str) -> bool:
    """Whether ``path`` is a plain file (not a link to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _on_warning(signum: int, frame: Any, previous: dict[int, Any]) -> None:
    _preempted.set()
    with _lock:
        running = list(_running)
    for ctx in running:
        if ctx._getter is not None:
            try:
                ctx.save(ctx._getter())
                log.warning("stage %s: saved its state on signal %d", ctx.stage, signum)
            except Exception as e:
                log.warning("stage %s: autosave on signal %d failed: %s", ctx.stage, signum, e)
    old = previous.get(signum)
    if callable(old):
        old(signum, frame)
    elif old in (signal.SIG_DFL, None):
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install_warning_handlers() -> bool:
    """Install the kill-warning handler (see the module docs); False where it cannot be
    (not the main thread) or is already there."""
    if threading.current_thread() is not threading.main_thread():
        return False
    previous: dict[int, Any] = {}
    for name in WARNING_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        old = signal.getsignal(sig)
        if getattr(old, "__packlab_warning__", False):
            return False

        def handler(signum, frame, _previous=previous):
            _on_warning(signum, frame, _previous)

        handler.__packlab_warning__ = True
        previous[sig] = old
        signal.signal(sig, handler)
    return True


class WarningPlugin(WorkerPlugin):
    """A Dask worker plugin installing :func:`install_warning_handlers` on each worker."""

    name = "packlab-pipeline-warnings"

    def setup(self, worker: Any) -> None:
        installed = install_warning_handlers()
        log.debug("packlab pipeline kill-warning handlers on %s: %s", getattr(worker, "address", "?"),
                  installed)
