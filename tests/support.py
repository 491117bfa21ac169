"""Helpers shared by test modules. A plain module, not conftest: tests/cudasim has its own
conftest.py, and ``from conftest import ...`` picks whichever was imported first."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import psutil

import packlab


def small_cluster() -> packlab.PackCluster:
    """A small TLS local cluster: 2 workers x 1 thread, 1 GiB each (clamping notes silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        return packlab.launch(workers=2, cores=1, memory="1GiB", wait=True)


def race(fn: Callable[[], Any], n: int = 4) -> list[Any]:
    """Call ``fn`` from ``n`` threads released together; return what each call returned,
    or the PacklabError (or PacklabRuntimeError: e.g. a LeaseError) it raised."""
    start, outcomes = threading.Barrier(n), []

    def call():
        start.wait()
        try:
            outcomes.append(fn())
        except (packlab.PacklabError, packlab.errors.PacklabRuntimeError) as e:
            outcomes.append(e)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def listening(pid: int | None = None) -> set[tuple[str, int]]:
    """(ip, port) of every listening TCP socket of process ``pid`` (default: this one)."""
    proc = psutil.Process(pid)
    # net_connections is psutil >= 6; connections() before (the declared minimum is 5.9).
    conns = (proc.net_connections if hasattr(proc, "net_connections") else proc.connections)(kind="tcp")
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}


def dashboard_binds(link: str, pid: int | None = None) -> set[str]:
    """The IPs that the dashboard at ``link`` really listens on (from the process's sockets)."""
    port = urlparse(link).port
    ips = {ip for ip, p in listening(pid) if p == port}
    assert ips, f"nothing listens on the dashboard's port {port}"
    return ips
