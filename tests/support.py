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

# Paths for tests in any folder under tests/: helper scripts run by path live here.
TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


def skip_or_fail_in_ci(reason: str | None, ci_message: str, skip_message: str) -> None:
    """Tests that need a real part (SLURM, mounts) skip loudly without it, and fail instead
    under CI=true, where they must run. ``reason`` None: the part is there."""
    if reason is None:
        return
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"{ci_message}: {reason}")
    pytest.skip(f"{skip_message}: {reason}")


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


# -- every listener of a cluster, read from its processes' sockets --------------------------
def _identity(address: str, connection_args: dict) -> str:
    """The type of the Dask server at ``address`` (its ``identity`` answer), asked with these
    connection arguments; raises what the connection raises."""
    import asyncio

    from distributed.core import rpc

    async def ask() -> str:
        async with rpc(address, connection_args=connection_args, timeout=5) as r:
            return (await r.identity())["type"]

    return asyncio.run(ask())


def foreign_tls_args() -> dict:
    """A client with certificates of its own (``Security.temporary()``) that trusts any
    server: only the server's refusal can stop it."""
    import ssl

    from distributed import Security

    args = Security.temporary().get_connection_args("client")
    args["ssl_context"].check_hostname = False
    args["ssl_context"].verify_mode = ssl.CERT_NONE
    return args


def refusals(address: str, security) -> dict[str, str]:
    """Call the TLS Dask server at ``address`` with the cluster's own certificates (it must
    answer), over plain TCP and with foreign certificates (it must refuse both); returns
    the error each stranger got."""
    assert address.startswith("tls://"), address
    answer = _identity(address, security.get_connection_args("client"))
    assert answer in {"Scheduler", "Worker", "Nanny"}, answer
    refused = {}
    for who, addr, args in (("plain", address.replace("tls://", "tcp://", 1), {}),
                            ("foreign", address, foreign_tls_args())):
        try:
            got = _identity(addr, args)
        except (OSError, TimeoutError) as e:  # CommClosedError is an OSError
            refused[who] = type(e).__name__
        else:
            raise AssertionError(f"{answer} at {address} answered a {who} client: {got}")
    return refused


def cluster_listeners(pc: packlab.PackCluster) -> list[tuple[str, str, str, int]]:
    """``(process, what, ip, port)`` for every listening TCP socket of the cluster's
    scheduler, nannies and workers. Of this process (the scheduler's, and a local cluster's
    nannies') only their own ports count; of every other process, every socket. ``what``
    is ``comm`` (Dask's protocol), ``http`` (dashboard, /metrics) or ``unknown``."""
    client = pc.client
    info = client.scheduler_info()
    known: dict[int, dict[int, tuple[str, str]]] = {}  # pid -> port -> (process, what)
    hosts: dict[int, str] = {}  # port of a comm of this process -> the host it listens on

    def add(role: str, pid: int, comm: str, http: dict) -> None:
        ports = known.setdefault(pid, {})
        ports[urlparse(comm).port] = (role, "comm")
        if pid == os.getpid():
            hosts[urlparse(comm).port] = urlparse(comm).hostname
        ports.update({p: (role, "http") for p in http.values()})

    add("scheduler", os.getpid(), pc.scheduler_address, info["services"])
    nannies = client.run(os.getpid, nanny=True)  # by the address of the worker each one runs
    for addr, pid in client.run(os.getpid).items():
        w = info["workers"][addr]
        add("worker", pid, addr, w["services"])
        if w.get("nanny"):
            add("nanny", nannies[addr], w["nanny"], {})
    found = []
    for pid, ports in known.items():
        for ip, p in sorted(listening(pid)):
            # In this process, another test's server may listen on the same port number
            # at another address: a comm counts at its own host (or a wildcard) only.
            mine = p in ports and (p not in hosts or ip in {hosts[p], "0.0.0.0", "::"})
            if pid != os.getpid() or mine:
                role, what = ports.get(p, (f"process {pid}", "unknown"))
                found.append((role, what, ip, p))
    return found


def assert_no_open_listener(pc: packlab.PackCluster) -> dict[str, int]:
    """Every listener of the cluster is either a Dask comm port that refuses plain TCP and
    foreign certificates, or an HTTP server on 127.0.0.1; returns counts by kind."""
    counts: dict[str, int] = {}
    for role, what, ip, port in cluster_listeners(pc):
        assert what != "unknown", f"the {role} listens on {ip}:{port}, which packlab does not know"
        if what == "http":
            assert ip == "127.0.0.1", f"the {role}'s HTTP server (dashboard) listens on {ip}:{port}"
        else:
            host = "127.0.0.1" if ip in {"0.0.0.0", "::"} else ip
            assert set(refusals(f"tls://{host}:{port}", pc.security)) == {"plain", "foreign"}
        key = f"{what}-{'loopback' if ip == '127.0.0.1' else 'wider'}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def network_interface() -> str:
    """An interface with a non-loopback IPv4 address, so that a cluster listens beyond
    127.0.0.1 as it must on a real cluster (the compute nodes reach the login node)."""
    import pytest

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family.name == "AF_INET" and not a.address.startswith("127.") for a in addrs):
            return name
    pytest.fail("this machine has no network interface beside loopback")
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
