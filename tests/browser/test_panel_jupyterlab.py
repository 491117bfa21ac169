"""The panel inline in a real JupyterLab: jupyter_bokeh's BokehModel over the kernel's own
connection (no second server, no port), BokehJS from the extension (no CDN)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
from browser_support import HERE, SHOTS, free_port, wait_for_telemetry
from test_panel_browser import canvases, card


@pytest.fixture
def lab(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
           "--LabApp.expose_app_in_browser=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    end = time.time() + 120
    while True:
        assert proc.poll() is None, (tmp_path / "lab.log").read_text()
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        assert time.time() < end, "jupyter lab did not answer /api/status"
        time.sleep(0.2)
    yield base, token, tmp_path
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def open_and_run(page, base: str, token: str, name: str) -> None:
    """Open notebook ``name`` in JupyterLab, run all its cells, wait for the six plots."""
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")
    page.wait_for_function("window.jupyterapp !== undefined", timeout=60_000)
    page.evaluate("async () => { await window.jupyterapp.restored; }")
    page.locator(".jp-Notebook").first.wait_for(timeout=60_000)
    page.wait_for_function("""() => { const w = window.jupyterapp.shell.currentWidget;
        return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel &&
               w.sessionContext.session.kernel.connectionStatus === 'connected'; }""", timeout=90_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function("() => document.querySelectorAll('.jp-OutputArea-output').length > 0",
                           timeout=90_000)
    for _ in range(240):  # the widget renders the Bokeh document: six plots
        if canvases(page) >= 6:
            break
        page.wait_for_timeout(500)
    assert canvases(page) >= 6, page.locator(".jp-OutputArea").first.inner_text()
    page.locator(".plc").first.wait_for(timeout=30_000)


def test_notebook_panel_renders_in_jupyterlab(page, lab, run_store):
    base, token, root = lab
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"from packlab.ui import panel\npanel({run_store!r})")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "panel.ipynb")
    open_and_run(page, base, token, "panel.ipynb")
    page.locator(".plc").first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(SHOTS / "jupyterlab-panel.png"), full_page=False)


def test_notebook_panel_follows_a_run_over_the_kernel_connection(page, lab, tmp_path):
    """panel(store, interval=...) refreshes in a kernel thread; jupyter_bokeh sends each
    change over the widget's comm: the count rises in the page without a re-run."""
    base, token, root = lab
    store = str(tmp_path / "live.db")
    work = subprocess.Popen([sys.executable, str(HERE / "workload.py"), store, "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_telemetry(store, work)
        nb = nbformat.v4.new_notebook()
        cell = f"from packlab.ui import panel\npanel({store!r}, interval='1s')"
        nb.cells = [nbformat.v4.new_code_cell(cell)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, root / "live.ipynb")
        open_and_run(page, base, token, "live.ipynb")
        first = int(card(page, "Jobs completed today").replace(",", ""))
        for _ in range(240):
            if int(card(page, "Jobs completed today").replace(",", "")) > first + 10:
                break
            page.wait_for_timeout(500)
        assert int(card(page, "Jobs completed today").replace(",", "")) > first + 10
        page.screenshot(path=str(SHOTS / "jupyterlab-panel-live.png"), full_page=False)
    finally:
        work.terminate()
        work.wait(60)
