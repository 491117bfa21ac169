"""The server extension in a real Jupyter server: login, health, the panel and its
websocket, the registry, and starting and stopping a cluster through the API."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import warnings

import pytest
import tornado.httpclient
import tornado.websocket

import packlab
from packlab.clusters import registry

NO_LOGIN = {"Authorization": ""}


async def _json(jp_fetch, *path, **kw):
    r = await jp_fetch("packlab", "api", *path, **kw)
    return json.loads(r.body or b"{}")


@pytest.mark.parametrize("path", ["api/health", "api/clusters", "api/stores", "api/options", "panel"])
async def test_every_route_refuses_a_request_without_the_token(jp_fetch, path):
    with pytest.raises(tornado.httpclient.HTTPClientError) as e:
        await jp_fetch("packlab", *path.split("/"), headers=NO_LOGIN)
    assert e.value.code == 403


async def test_a_delete_without_the_token_stops_nothing(jp_fetch):
    # the one route not above: DELETE api/clusters/NAME (routes.py registers six)
    with pytest.raises(tornado.httpclient.HTTPClientError) as e:
        await jp_fetch("packlab", "api", "clusters", "any-name", method="DELETE", headers=NO_LOGIN)
    assert e.value.code == 403


async def test_a_post_without_the_token_starts_nothing(jp_fetch):
    with pytest.raises(tornado.httpclient.HTTPClientError) as e:
        await jp_fetch("packlab", "api", "clusters", method="POST", headers=NO_LOGIN,
                       body=json.dumps({"min_workers": 1, "max_workers": 1}))
    assert e.value.code == 403
    assert registry.entries() == []


async def test_health(jp_fetch, jp_base_url):
    assert jp_base_url == "/user/tester/"  # every route here is under a JupyterHub-style base URL
    assert await _json(jp_fetch, "health") == {"status": "ok", "extension": "0.1.0",
                                                "packlab": packlab.__version__,
                                                "panel": "packlab.ui.document"}


async def test_options_list_backends_and_profiles(jp_fetch):
    o = await _json(jp_fetch, "options")
    assert "local" in o["backends"] and o["backend"] == "local"
    assert {p["name"] for p in o["profiles"]} == set(packlab.PROFILES)


def _session_token(page: str) -> str:
    return re.search(r'"token":\s*"([^"]+)"', page).group(1)


async def test_panel_page_holds_a_signed_session_and_its_websocket_checks_origin(
        jp_fetch, jp_http_port, jp_base_url, jp_auth_header):
    r = await jp_fetch("packlab", "panel")
    page = r.body.decode()
    assert r.code == 200 and "<title>packlab panel</title>" in page
    assert "cdn.bokeh.org" not in page  # BokehJS inlined: no CDN needed
    token = _session_token(page)
    url = f"ws://localhost:{jp_http_port}{jp_base_url}packlab/panel/ws"

    def connect(origin: str, tok: str):
        req = tornado.httpclient.HTTPRequest(url, headers={"Origin": origin})
        return tornado.websocket.websocket_connect(req, subprotocols=["bokeh", tok])

    ws = await connect(f"http://localhost:{jp_http_port}", token)  # Jupyter's own origin
    msg = await ws.read_message()  # Bokeh's ACK, then the document
    assert '"msgtype":"ACK"' in msg.replace(" ", "")
    ws.close()

    with pytest.raises(tornado.httpclient.HTTPClientError) as e:
        await connect("http://evil.example:80", token)
    assert e.value.code == 403

    # A token not signed with this server's secret: the connection is closed at once.
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    ws = await connect(f"http://localhost:{jp_http_port}", forged)
    assert await ws.read_message() is None


async def test_registry_dead_entries_are_not_listed_and_are_removed(jp_fetch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid is free
    d = registry.directory()
    path = os.path.join(d, "gone.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps({"name": "gone", "backend": "local", "scheduler": "tls://127.0.0.1:1",
                             "dashboard": None, "tls": None, "pid": dead.pid, "host": socket.gethostname(),
                             "started": 0.0}).encode())
    os.close(fd)
    assert (await _json(jp_fetch, "clusters"))["clusters"] == []
    assert not os.path.exists(path)


async def test_start_a_cluster_list_it_connect_to_it_and_stop_it(jp_fetch, tmp_path):
    with pytest.raises(tornado.httpclient.HTTPClientError) as e:
        await jp_fetch("packlab", "api", "clusters", method="POST",
                       body=json.dumps({"min_workers": 3, "max_workers": 1}))
    assert e.value.code == 400
    assert "min_workers=3 is greater than max_workers=1" in json.loads(e.value.response.body)["error"]

    with pytest.raises(tornado.httpclient.HTTPClientError) as e:
        await jp_fetch("packlab", "api", "clusters", method="POST", body=json.dumps({"cores": 64}))
    assert e.value.code == 400 and json.loads(e.value.response.body)["field"] == "cores"

    r = await jp_fetch("packlab", "api", "clusters", method="POST",
                       body=json.dumps({"backend": "local", "profile": "general-batch",
                                        "min_workers": 1, "max_workers": 1, "name": "from-lab"}))
    started = json.loads(r.body)
    assert r.code == 201 and started["name"] == "from-lab"
    assert started["connect"] == 'import packlab\nclient = packlab.connect("from-lab")'
    try:
        (c,) = (await _json(jp_fetch, "clusters"))["clusters"]
        assert (c["name"], c["backend"], c["here"], c["workers"], c["tls"]) == (
            "from-lab", "local", True, 1, True)

        store = str(tmp_path / "lab.db")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            client = packlab.connect("from-lab")
        with client, packlab.JobQueue(client, store=store) as q:
            assert [j.result(timeout=60) for j in q.map(abs, [-1, -2])] == [1, 2]
            q.flush()  # the store has the outcomes (its writer commits in batches)
            (s,) = (await _json(jp_fetch, "stores"))["stores"]
            assert (s["path"], s["done"], s["depth"]) == (store, 2, 0)
            # a queue on a client of its own holds no telemetry: no cost is made up for it
            assert s["cost"] is None, s
        for _ in range(100):  # the scheduler writes its telemetry in batches, off its loop
            (c,) = (await _json(jp_fetch, "clusters"))["clusters"]
            if c["cost"] is not None:
                break
            await asyncio.sleep(0.1)
        assert re.fullmatch(r"\d+\.\d{4}\u00a0USD", c["cost"]), c  # priced from its own telemetry
        r = await jp_fetch("packlab", "panel", params={"store": store})
        assert r.code == 200
    finally:
        r = await jp_fetch("packlab", "api", "clusters", "from-lab", method="DELETE")
    assert r.code == 204
    assert (await _json(jp_fetch, "clusters"))["clusters"] == []
    with pytest.raises(tornado.httpclient.HTTPClientError) as e:
        await jp_fetch("packlab", "api", "clusters", "from-lab", method="DELETE")
    assert e.value.code == 404 and "not a running cluster" in json.loads(e.value.response.body)["error"]


async def test_a_cluster_launched_in_python_is_listed_but_not_stopped_from_lab(jp_fetch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pc = packlab.launch(workers=1, cores=1, memory="1GiB", wait=True, name="notebook-one")
    with pc:
        (c,) = (await _json(jp_fetch, "clusters"))["clusters"]
        assert (c["name"], c["here"], c["workers"]) == ("notebook-one", False, 1)
        with pytest.raises(tornado.httpclient.HTTPClientError) as e:
            await jp_fetch("packlab", "api", "clusters", "notebook-one", method="DELETE")
        assert e.value.code == 409
        assert "not by this Jupyter server" in json.loads(e.value.response.body)["error"]
