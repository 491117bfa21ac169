"""Run by each local worker process at start (a Dask ``preload`` module).

Ctrl-C in a terminal sends SIGINT to the whole foreground process group: to the
program that called :func:`packlab.launch` *and* to each of its worker processes. The
program closes its cluster (``with`` block, ``packlab cluster up``); the workers must
not die on their own first, each printing a KeyboardInterrupt traceback. So they ignore
SIGINT; their parent still stops them (and SIGTERM/SIGKILL still work).
"""

from __future__ import annotations

import signal
import threading


def dask_setup(worker) -> None:
    """Ignore SIGINT in this worker process (the worker's loop runs in its main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
