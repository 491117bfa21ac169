"""The panel, its report and ``packlab dashboard`` against a real cluster, queue and store."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import warnings

import numpy as np
import pytest
from bokeh.document import Document
from click.testing import CliRunner

import packlab
from packlab.cli import main
from packlab.demo import batch as demo_batch
from packlab.telemetry.summary import advise
from packlab.ui import viewmodel as vm
from packlab.ui.feed import Feed
from packlab.ui.panel import make_document, panel
from packlab.ui.report import html as report_html


@pytest.fixture(scope="module")
def store():
    """A store holding one real run: a JobQueue batch of two owners on a 2-worker cluster."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "run.db")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", packlab.PacklabWarning)
            with packlab.launch(workers=2, cores=1, memory="1GiB", wait=True, store=path) as pc:
                demo_batch.run(pc, path, d, jobs=60, nap=0.1)  # ~3 s: sampled at 1 Hz
        yield path


def test_panel_draws_what_the_monitor_computes(store):
    p = panel(store)
    fr, snap = p.frame, packlab.monitor(store).snapshot()
    assert (fr.snapshot.jobs, fr.snapshot.jobs_failed, fr.snapshot.queue_depth) == (
        snap.jobs, snap.jobs_failed, snap.queue_depth)
    assert not fr.live and p.interval is None  # a store alone: history, read once
    assert len(p.figures) == 6
    assert len(p.dur_src.data["y"]) == len(packlab.monitor(store).history("job_duration")["job_duration"])
    # queue depth: the total and each priority class the batch used, as lines
    assert {"all", "normal"} <= set(p.queue_src.data["label"])
    assert max(max(ys) for ys in p.queue_src.data["ys"]) > 0
    # two workers, both stopped once the cluster closed
    assert p.worker_src.data["state"] == ["stopped", "stopped"]
    assert fr.health_label == "2 stopped"
    # utilisation lines in percent, every point within 0..100
    assert set(p.util_src.data["label"]) == {"busy threads", "CPU", "memory"}
    assert all(0 <= y <= 100 for ys in p.util_src.data["ys"] for y in ys)
    # the SLA of the alert rule, and the dead-letter job in the failure rate
    assert p.sla_span.location == 3600 and p.sla_span.visible
    assert fr.snapshot.jobs_failed == 1 and max(p.fail_src.data["y"]) > 0
    # every finding with its fix
    for f in advise(store):
        assert html.escape(f.fix) in p.findings.text


def test_report_is_one_offline_file(store, tmp_path):
    r = CliRunner().invoke(main, ["report", "--store", store, "-o", str(tmp_path / "report.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "report.html").read_text()
    assert "Worker health" in page and "Queue depth by priority class" in page
    # BokehJS inline, nothing fetched: no external script, stylesheet or CDN
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"?https?:", page)
    assert "cdn.bokeh.org" not in page
    assert len(page) < 5 * 2**20


def test_report_downsamples_lines(store):
    page = report_html(store, points=10)
    assert "Utilisation" in page
    f = Feed(store, points=10).read()
    assert all(len(t) <= 10 for t, _ in f.utilisation.values())
    assert all(len(t) <= 10 for t, _ in f.queue.values())


def test_live_panel_reads_only_new_rows_and_advances(tmp_path):
    path = str(tmp_path / "live.db")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True, store=path) as pc:
            p = panel(pc, interval="1s")
            assert p.frame.live and p.interval == 1.0
            first = p.frame.snapshot.jobs
            pc.client.gather(pc.client.map(abs, range(-50, 0)))
            pc.telemetry.flush()
            before = {k: len(v[0][0]) if v[0] else 0 for k, v in p.feed._lines.items()}
            fr = p.refresh()
            assert fr.snapshot.jobs >= first + 50
            assert fr.health_label == "1/1 healthy" and p.worker_src.data["colour"] == [vm.OK]
            assert len(p.feed.line("utilisation")[0]) >= before.get("utilisation", 0)
            t = p.feed.line("utilisation")[0]
            assert np.all(np.diff(t) > 0)  # appended, never read twice


def test_make_document_adds_the_panel_and_its_callback(store):
    doc = Document()
    p = make_document(doc, store, interval="2s")
    assert doc.roots == [p.layout]
    assert p.interval == 2.0 and len(doc.session_callbacks) == 1


def test_launcher_shows_the_panel_once_a_cluster_is_up():
    from jupyter_bokeh import BokehModel

    from packlab.ui import ClusterLauncher

    ui = ClusterLauncher(min_workers=1, max_workers=1, refresh_interval=None, cores=1, memory="1GiB")
    try:
        assert ui.panel_box.children == ()
        ui.launch()
        assert ui.cluster is not None, ui.error.value
        assert isinstance(ui.panel_box.children[0], BokehModel)
        assert ui.panel.frame.live
    finally:
        ui.stop()
    assert ui.panel is None and ui.panel_box.children == ()


@pytest.mark.parametrize("args, message", [
    (["--port", "0"], "--port=0 is invalid"),
    (["--port", "70000"], "--port=70000 is invalid"),
    (["--address", "example.org:80"], "--address='example.org:80' is invalid"),
    (["--address", "0.0.0.0", "--token", "short"], "--token='<hidden>' is invalid"),
])
def test_dashboard_bad_input_exits_2(store, args, message):
    r = CliRunner().invoke(main, ["dashboard", "--store", store, *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_dashboard_refuses_a_store_without_telemetry(tmp_path):
    r = CliRunner().invoke(main, ["dashboard", "--store", str(tmp_path / "none.db")])
    assert r.exit_code == 2 and "store=" in r.output.replace("--store=", "store=")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_elsewhere_requires_its_token_and_its_own_origin(store):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "packlab.cli", "dashboard", "--store", store, "--port",
                             str(port), "--address", "0.0.0.0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = line.split(": ", 1)[1].strip()
        token = url.split("?token=")[1]
        assert len(token) >= 24
        base = f"http://127.0.0.1:{port}/"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base, timeout=30)
        assert e.value.code == 403
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "?token=" + "x" * len(token), timeout=30)
        assert e.value.code == 403
        with urllib.request.urlopen(base + "?token=" + token, timeout=30) as r:
            assert r.status == 200 and "packlab" in r.read().decode()
            assert "packlab_dashboard_token" in r.headers.get("Set-Cookie", "")
        # the websocket refuses another origin even with the token
        from tornado.httpclient import HTTPClientError, HTTPRequest
        from tornado.ioloop import IOLoop
        from tornado.websocket import websocket_connect

        async def connect(origin):
            req = HTTPRequest(f"ws://127.0.0.1:{port}/ws?token={token}",
                              headers={"Origin": origin, "Cookie": f"packlab_dashboard_token={token}"})
            try:
                ws = await websocket_connect(req)
                ws.close()
                return 101
            except HTTPClientError as err:
                return err.code

        assert IOLoop.current().run_sync(lambda: connect("http://evil.example.org")) == 403
    finally:
        proc.terminate()
        proc.wait(30)
