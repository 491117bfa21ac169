"""Helpers shared by test modules. A plain module, not conftest: tests/cudasim has its own
conftest.py, and ``from conftest import ...`` picks whichever was imported first."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
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


def tree_listeners(pid: int | None = None) -> set[tuple[int, str, int]]:
    """(pid, ip, port) of every listening TCP socket and bound UDP socket of process ``pid``
    (default: this one) and of all its descendants, read from the kernel (psutil)."""
    root = psutil.Process(pid)
    found = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = (proc.net_connections if hasattr(proc, "net_connections") else proc.connections)("inet")
        except psutil.NoSuchProcess:  # it ended meanwhile: it listens on nothing
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN or (c.type == socket.SOCK_DGRAM and c.laddr):
                found.add((proc.pid, c.laddr.ip, c.laddr.port))
    return found


def is_loopback(ip: str) -> bool:
    """Whether ``ip`` (as psutil reports a bound address) reaches this machine only."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def read_until(stream, prefix: str, seen: list[str], timeout: float = 120) -> str:
    """Read lines from a subprocess pipe until one starts with ``prefix``; fail on EOF/timeout."""
    found: list[str] = []

    def read():
        for line in stream:
            seen.append(line)
            if line.startswith(prefix):
                found.append(line)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    assert found, f"no {prefix!r} line; output so far: {''.join(seen)!r}"
    return found[0].split(":", 1)[1].strip()


def _ignore_sigint() -> None:
    """As ``nohup cmd &`` in a script leaves it: SIGINT ignored, inherited by the child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def cluster_up(*args: str, sigint_ignored: bool = False):
    """``packlab cluster up ARGS`` in a session of its own (so a test can signal its whole
    process group the way a terminal's Ctrl-C does, without touching pytest); killed if
    the test leaves it running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "packlab.cli", "cluster", "up", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        preexec_fn=_ignore_sigint if sigint_ignored else None,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
