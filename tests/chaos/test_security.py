"""Security promises broken on purpose, against real processes: what every listener of a
cluster, dashboard, panel and the JupyterLab extension really binds (the kernel's sockets,
read with psutil over the whole process tree), TLS refusals on every Dask listener, and
the dashboard's token on every route it serves.

Files, logs and planted symlinks: test_security_files.py. The promise -> test table is in
README.md ("Chaos tests").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlparse

import cloudpickle
import pytest
import tornado.httpclient
import tornado.websocket
from distributed import Security
from distributed.comm import connect
from support import cluster_up, is_loopback, read_until, tree_listeners

import packlab

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # _refusals runs on the workers
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_of(address: str) -> int:
    return urlparse(address.replace("tls://", "http://")).port


def wide(listeners: set[tuple[int, str, int]]) -> set[tuple[int, str, int]]:
    """The listeners that other machines can reach."""
    return {x for x in listeners if not is_loopback(x[1])}


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Wait until ``url``'s port accepts connections (no request: a dashboard's page is a
    session that reads the store)."""
    import socket

    end = time.time() + timeout
    host_port = urlparse(url)
    while True:
        assert proc.poll() is None, log.read_text()
        with contextlib.suppress(OSError), socket.create_connection((host_port.hostname, host_port.port), 1):
            return
        assert time.time() < end, f"{url} did not answer: {log.read_text()}"
        time.sleep(0.1)


def status(url: str, headers: dict[str, str] | None = None, method: str = "GET", data: bytes | None = None):
    req = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """A TLS local cluster of 2 workers (each with its nanny) in a throwaway HOME."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        before = tree_listeners()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", packlab.PacklabWarning)
            pc = packlab.launch(workers=2, cores=1, memory="1GiB", wait=True, name="sec")
        with pc:
            yield pc, before


# -- no listener beyond 127.0.0.1 without authentication -------------------------------
def test_a_local_cluster_listens_on_loopback_only_scheduler_workers_nannies_dashboards(pack):
    pc, before = pack
    info = pc.client.scheduler_info()["workers"]
    socks = tree_listeners() - before
    ports = {port for _, _, port in socks}
    # Every listener a cluster has is there (so the check below is not vacuous): the
    # scheduler, its dashboard, each worker and nanny, each worker's HTTP server.
    expected = {port_of(pc.scheduler_address), port_of(pc.dashboard_link)}
    for addr, w in info.items():
        expected |= {port_of(addr), port_of(w["nanny"]), w["services"]["dashboard"]}
    assert len(expected) == 2 + 3 * 2 and expected <= ports, (expected, socks)
    assert len({pid for pid, _, _ in socks}) == 3  # this process (scheduler, nannies) and 2 workers
    assert wide(socks) == set(), socks


def test_cluster_up_listens_on_loopback_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    seen: list[str] = []
    with cluster_up("--profile", "general-batch", "--workers", "1") as proc:
        read_until(proc.stdout, "connect:", seen)
        for _ in range(100):  # its worker is up once the scheduler says so
            socks = tree_listeners(proc.pid)
            if len({pid for pid, _, _ in socks}) == 2:
                break
            time.sleep(0.1)
        # the scheduler, its dashboard, the nanny; the worker and its HTTP server
        assert len({pid for pid, _, _ in socks}) == 2 and len(socks) >= 5, socks
        assert wide(socks) == set(), socks
        proc.terminate()
        proc.communicate(timeout=120)


# -- TLS: plain TCP and foreign certificates refused on every Dask listener ----------------
def _unverified(cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A TLS client that trusts any server (so only the server can refuse) and shows
    ``cert`` (a foreign one) or no certificate at all."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def _refusals() -> list[str]:
    """What Dask's TLS listeners of this process logged (a handler kept from the first call)."""
    import logging

    log = logging.getLogger("distributed.comm.tcp")
    if not hasattr(log, "packlab_said"):
        log.packlab_said = []
        keep = logging.Handler()
        keep.emit = lambda record: log.packlab_said.append(record.getMessage())
        log.addHandler(keep)
    return list(log.packlab_said)


async def _identity(addr: str, **kw) -> str:
    """The ``type`` a Dask server at ``addr`` says it is, over a comm made with ``kw``."""
    comm = await connect(addr, timeout=5, **kw)
    try:
        await comm.write({"op": "identity"})
        return (await comm.read())["type"]
    finally:
        await comm.close()


@pytest.mark.parametrize("kind", ["Scheduler", "Worker", "Nanny"])
def test_every_dask_listener_refuses_plain_tcp_and_foreign_certificates(pack, kind, tmp_path):
    pc, _ = pack
    info = pc.client.scheduler_info()["workers"]
    addrs = {"Scheduler": [pc.scheduler_address], "Worker": list(info),
             "Nanny": [w["nanny"] for w in info.values()]}[kind]
    assert len(addrs) == (1 if kind == "Scheduler" else 2)
    foreign = Security.temporary()
    (tmp_path / "cert.pem").write_text(foreign.tls_client_cert)
    (tmp_path / "key.pem").write_text(foreign.tls_client_key)
    own = pc.security.get_connection_args("client")
    _refusals(), pc.client.run(_refusals)  # start listening to what the listeners log

    async def probe(addr: str):
        refused = {
            "plain TCP": _identity(addr.replace("tls://", "tcp://")),
            "foreign Security.temporary()": _identity(addr, **foreign.get_connection_args("client")),
            "foreign client certificate": _identity(
                addr, ssl_context=_unverified(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))),
            "no client certificate": _identity(addr, ssl_context=_unverified()),
        }
        outcomes = await asyncio.gather(*refused.values(), return_exceptions=True)
        return await _identity(addr, **own), dict(zip(refused, outcomes, strict=True))

    for addr in addrs:
        assert addr.startswith("tls://")
        answered, outcomes = asyncio.run(probe(addr))
        assert answered == kind  # the cluster's own certificates are answered: the listener is live
        for how, outcome in outcomes.items():
            assert isinstance(outcome, OSError), f"{kind} {addr} answered {outcome!r} to {how}"
    # The listeners refused them, not only our client: each one's own log says why.
    said = [*_refusals(), *(msg for msgs in pc.client.run(_refusals).values() for msg in msgs)]
    for addr in addrs:
        mine = [msg for msg in said if f"Listener on '{addr}': TLS handshake failed" in msg]
        for reason in ("WRONG_VERSION_NUMBER", "CERTIFICATE_VERIFY_FAILED",
                       "PEER_DID_NOT_RETURN_A_CERTIFICATE"):
            assert any(reason in msg for msg in mine), (addr, reason, said)


# -- packlab dashboard ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(pack, tmp_path_factory):
    """A store with telemetry (the dashboard refuses one without): a short queue run."""
    pc, _ = pack
    path = str(tmp_path_factory.mktemp("store") / "q.db")
    with packlab.JobQueue(pc, store=path) as q:
        assert [j.result(timeout=60) for j in q.map(abs, range(-5, 0))] == [5, 4, 3, 2, 1]
    return path


@contextlib.contextmanager
def dashboard(store: str, tmp_path: Path, *args: str):
    port = free_port()
    log = tmp_path / f"dashboard-{port}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "packlab.cli", "dashboard", "--store", store,
                                 "--port", str(port), *args], stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("packlab dashboard: "), log.read_text()
        wait_http(f"http://127.0.0.1:{port}/", proc, log)
        proc.log = log
        yield proc, port, line.split(": ", 1)[1].strip()
    finally:
        stop(proc)


def test_packlab_dashboard_listens_on_loopback_only_by_default(store, tmp_path):
    with dashboard(store, tmp_path) as (proc, port, url):
        assert url == f"http://127.0.0.1:{port}/"
        socks = tree_listeners(proc.pid)
        assert {p for _, _, p in socks} == {port} and wide(socks) == set(), socks


async def _ws_status(url: str, origin: str, cookie: str | None = None) -> int:
    """The answer to a websocket upgrade carrying a forged, unsigned Bokeh session token."""
    from bokeh.util.token import generate_jwt_token, generate_session_id

    forged = generate_jwt_token(generate_session_id(signed=False), signed=False,
                                extra_payload={"headers": {}, "cookies": {}, "arguments": {}})
    headers = {"Origin": origin, **({"Cookie": cookie} if cookie else {})}
    try:
        ws = await tornado.websocket.websocket_connect(tornado.httpclient.HTTPRequest(url, headers=headers),
                                                       subprotocols=["bokeh", forged])
    except tornado.httpclient.HTTPClientError as e:
        return e.code
    ws.close()
    return 101


def test_packlab_dashboard_off_loopback_refuses_every_route_without_its_token(store, tmp_path):
    with dashboard(store, tmp_path, "--address", "0.0.0.0") as (proc, port, url):
        socks = tree_listeners(proc.pid)
        assert {p for _, _, p in wide(socks)} == {port}, socks  # only the token-protected port is wide
        token = url.split("?token=")[1]
        base, origin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
        # Bokeh's server routes: the page, its autoload script, the session metadata, and
        # the websocket (a forged unsigned session token does not get one past the check).
        routes = ["/", "/autoload.js?bokeh-autoload-element=x&bokeh-absolute-url=" + base, "/metadata"]
        wrong = "x" * len(token)
        for route in routes:
            sep = "&" if "?" in route else "?"
            assert status(base + route)[0] == 403, route
            assert status(base + route + sep + "token=" + wrong)[0] == 403, route
            assert status(base + route, {"Cookie": "packlab_dashboard_token=" + wrong})[0] == 403, route
        # With it (one page each way: each page is a new session that reads the store).
        code, page = status(f"{base}/?token={token}")
        assert code == 200 and "packlab" in page
        assert status(base + "/metadata", {"Cookie": f"packlab_dashboard_token={token}"})[0] == 200
        ws = f"ws://127.0.0.1:{port}/ws"
        assert asyncio.run(_ws_status(ws, origin)) == 403  # its own origin, no token
        assert asyncio.run(_ws_status(ws + "?token=" + wrong, origin)) == 403
        assert asyncio.run(_ws_status(ws, origin, f"packlab_dashboard_token={token}")) == 101
    # Its logs after all that hold no traceback, key or token; the token is printed once, in
    # the URL on its standard output (by design), and written to no file.
    err, out = proc.log.read_text(), proc.stdout.read()  # (it has stopped: the rest of its output)
    assert "Traceback" not in err and "PRIVATE KEY" not in err and token not in err, err
    assert url.endswith(f"?token={token}") and token not in out
    assert all(token.encode() not in Path(f).read_bytes() for f in Path(store).parent.glob("q.db*"))


# -- the JupyterLab server extension -----------------------------------------------------------
@pytest.fixture
def jupyter(tmp_path):
    """A real ``jupyter server`` with packlab's server extension, opened to every interface
    with a token (as a user who wants it wider would), in a throwaway HOME."""
    port, token = free_port(), secrets.token_hex(16)
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"packlab_jupyterlab": True}}}))
    env = dict(os.environ, HOME=str(tmp_path), JUPYTER_CONFIG_DIR=str(config),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "extensions" / "jupyterlab"), str(ROOT),
                                           os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=0.0.0.0",
           f"--port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={tmp_path}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = tmp_path / "jupyter.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/status", proc, log)
        yield proc, f"http://127.0.0.1:{port}", token, log
    finally:
        stop(proc)


def test_jupyterlab_extension_adds_no_listener_and_its_cluster_stays_on_loopback(jupyter):
    proc, base, token, log = jupyter
    auth = {"Authorization": f"token {token}"}
    port = int(base.rsplit(":", 1)[1])
    code, body = status(f"{base}/packlab/api/clusters", auth, "POST",
                        json.dumps({"min_workers": 1, "max_workers": 1, "profile": "general-batch",
                                    "name": "from-lab"}).encode())
    assert code == 201, (body, log.read_text())
    try:
        code, page = status(f"{base}/packlab/panel", auth)  # the in-process Bokeh panel is live
        assert code == 200 and "<title>packlab panel</title>" in page
        (c,) = json.loads(status(f"{base}/packlab/api/clusters", auth)[1])["clusters"]
        assert c["name"] == "from-lab" and c["tls"] and c["workers"] == 1
        socks = tree_listeners(proc.pid)
        # Jupyter's own port is the only one open wider, and it wants the token: every
        # other listener (the cluster's scheduler, dashboard, nanny, worker) is loopback.
        assert {p for _, _, p in wide(socks)} == {port}, socks
        assert len(socks - wide(socks)) >= 4, socks  # scheduler, dashboard, nanny, worker (+ HTTP)
        assert len({pid for pid, _, _ in socks}) == 2  # the Jupyter server and the worker process
        assert status(f"{base}/packlab/api/clusters")[0] == 403  # the wide port: login required
    finally:
        assert status(f"{base}/packlab/api/clusters/from-lab", auth, "DELETE")[0] == 204
