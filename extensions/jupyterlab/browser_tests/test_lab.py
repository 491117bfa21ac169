"""A real JupyterLab in a real browser (Debian's Chromium, driven by Playwright).

``jupyter lab`` runs under a JupyterHub-style base URL with a token; a second process
runs a packlab cluster and a JobQueue that works through jobs. The test opens the
launcher card, waits until the panel's plots render and its jobs-done counter advances
over the websocket, starts and stops a cluster from the sidebar, and inserts the connect
cell into a notebook. Screenshots go to $PACKLAB_ARTIFACTS (default artifacts/) under
screenshots/. Every wait is on a condition, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("PACKLAB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("PACKLAB_ARTIFACTS", Path(__file__).resolve().parents[3] / "artifacts"))
SHOTS = ARTIFACTS / "screenshots"
BASE = "/user/tester/"
TIMEOUT = 90_000  # ms, for conditions (a 2-core CI machine shared by many)

expect.set_options(timeout=TIMEOUT)
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(condition, what: str, timeout: float = 90.0, proc: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("home")
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    (home / "work").mkdir()
    return home


@pytest.fixture(scope="module")
def env(home) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / ".jupyter"),
            "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def jobs(home, env):
    """Another process: a cluster named jobs-run and a queue working through slow jobs."""
    script = home / "jobs.py"
    script.write_text(textwrap.dedent("""
        import time, warnings
        import packlab

        def work(i):
            time.sleep(0.4)
            return i

        if __name__ == "__main__":
            warnings.simplefilter("ignore")
            with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True, name="jobs-run") as pc:
                with packlab.JobQueue(pc, store="jobs.db", max_in_flight=1) as q:
                    print("queue open", flush=True)
                    while True:  # until the test stops this process
                        q.map(work, range(20))
                        q.wait(timeout=600)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=home / "work", env=env, text=True,
                            stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "queue open"
        yield home / "work" / "jobs.db"
    finally:
        _kill(proc)


@pytest.fixture(scope="module")
def lab(home, env, jobs):
    """``jupyter lab`` under /user/tester/ with a token; yields its URL (with the token)."""
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
           "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
           f"--ServerApp.base_url={BASE}", f"--ServerApp.root_dir={home / 'work'}",
           "--LabApp.expose_app_in_browser=True", f"--LabApp.workspaces_dir={home / 'workspaces'}",
           f"--LabApp.user_settings_dir={home / 'settings'}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(home / "jupyter.log", "w")  # kept open while the server runs
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}{BASE}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{url}api/status?token={token}", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        _until(up, "jupyter lab to answer /api/status", proc=proc)
        yield url, token
    finally:
        _kill(proc)
        log.close()
        print((home / "jupyter.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def page(lab):
    url, token = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        pg = browser.new_page(viewport={"width": 1400, "height": 860})
        pg.set_default_timeout(TIMEOUT)
        pg.goto(f"{url}lab?reset&token={token}")
        pg.wait_for_function("() => window.jupyterapp !== undefined")
        pg.evaluate("() => window.jupyterapp.restored")
        yield pg
        browser.close()


KERNEL_IDLE = """() => {
    const w = window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return k && k.status === 'idle';
}"""


def _done(frame) -> int:
    """The panel's jobs-completed card (the store holds the cluster's telemetry)."""
    tile = frame.locator(".plc", has=frame.locator(".pll", has_text="Jobs completed today"))
    return int(tile.locator(".plv").inner_text().replace(",", ""))


def test_extensions_are_listed_enabled_and_ok(env):
    labext = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"], env=env,
                            capture_output=True, text=True, check=True)
    line = next(x for x in (labext.stdout + labext.stderr).splitlines() if "packlab-jupyterlab" in x)
    assert "enabled" in line and "OK" in line
    server = subprocess.run([sys.executable, "-m", "jupyter", "server", "extension", "list"], env=env,
                            capture_output=True, text=True, check=True)
    text = server.stdout + server.stderr
    assert "packlab_jupyterlab \x1b[32menabled" in text or "packlab_jupyterlab enabled" in text
    assert "packlab_jupyterlab 0.1.0 \x1b[32mOK" in text or "packlab_jupyterlab 0.1.0 OK" in text


def test_launcher_card_opens_the_live_panel(page):
    card = page.locator(".jp-LauncherCard", has_text="packlab panel")
    expect(card).to_be_visible()
    page.screenshot(path=str(SHOTS / "launcher.png"))
    card.click()
    frame = page.frame_locator(".packlab-panel-frame iframe")
    expect(frame.locator("canvas").first).to_be_visible()
    expect(frame.locator(".packlab-title")).to_contain_text("jobs.db")
    first = _done(frame)
    _until(lambda: _done(frame) > first, "the jobs-completed card to advance over the websocket")
    later = _done(frame)
    assert later > first
    page.screenshot(path=str(SHOTS / "panel.png"))


def test_sidebar_lists_the_running_cluster_and_its_store(page):
    page.locator('.jp-SideBar [data-id="packlab-sidebar"]').click()
    sidebar = page.locator("#packlab-sidebar")
    row = sidebar.locator('.packlab-cluster[data-name="jobs-run"]')
    expect(row).to_contain_text("workers 1")
    expect(sidebar.locator(".packlab-store")).to_contain_text("jobs.db")
    page.screenshot(path=str(SHOTS / "sidebar.png"))


def test_start_and_stop_a_cluster_from_the_sidebar(page):
    sidebar = page.locator("#packlab-sidebar")
    expect(sidebar.locator("select[name=backend] option")).not_to_have_count(0)
    sidebar.locator("select[name=backend]").select_option("local")
    sidebar.locator("input[name=min_workers]").fill("1")
    sidebar.locator("input[name=max_workers]").fill("1")
    sidebar.locator("input[name=name]").fill("lab-made")
    sidebar.locator(".packlab-start").click()
    row = sidebar.locator('.packlab-cluster[data-name="lab-made"]')
    expect(row).to_contain_text("in this Jupyter server")
    expect(row).to_contain_text("workers 1")
    expect(sidebar.locator(".packlab-status")).to_contain_text("Started lab-made")
    page.screenshot(path=str(SHOTS / "sidebar-new-cluster.png"))
    row.locator(".packlab-stop").click()
    expect(row).to_have_count(0)
    expect(sidebar.locator(".packlab-status")).to_contain_text("Stopped lab-made")


def test_insert_connect_puts_the_two_lines_in_the_notebook(page):
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:create-new', {kernelName: 'python3'})")
    expect(page.locator(".jp-NotebookPanel .jp-Cell").first).to_be_visible()
    page.locator('.packlab-cluster[data-name="jobs-run"] .packlab-insert').click()
    cell = page.locator(".jp-NotebookPanel .jp-Cell", has_text='packlab.connect("jobs-run")')
    expect(cell).to_contain_text("import packlab")
    expect(page.locator(".jp-NotebookPanel .jp-Cell")).to_have_count(1)  # the empty cell was used
    # Run it, with one line more: the kernel reaches the cluster through the registry.
    page.evaluate("""() => {
        const cell = window.jupyterapp.shell.currentWidget.content.activeCell.model.sharedModel;
        cell.setSource(cell.getSource() + "\\nprint('sum:', client.submit(sum, [1, 2]).result())");
        return window.jupyterapp.commands.execute('notebook:run-cell');
    }""")
    expect(cell.locator(".jp-OutputArea-output")).to_contain_text("sum: 3")
    page.screenshot(path=str(SHOTS / "notebook-connect.png"))


def test_the_panel_tab_is_restored_on_reload(page):
    """The panel tab comes back after a reload, behind the notebook that was active, and
    draws once shown (it loads when first shown: a page loaded hidden is laid out at 0)."""
    page.reload()
    page.wait_for_function("() => window.jupyterapp !== undefined")
    page.evaluate("() => window.jupyterapp.restored")
    page.wait_for_function(KERNEL_IDLE)  # the notebook settled: it no longer takes the focus back
    tab = page.locator(".lm-DockPanel .lm-TabBar-tab", has_text="packlab panel")
    expect(tab).to_have_count(1)
    tab.click()
    frame = page.frame_locator(".packlab-panel-frame iframe")
    expect(frame.locator("canvas").first).to_be_visible()
    _until(lambda: _done(frame) > 0, "the restored panel to show the jobs completed")
    page.screenshot(path=str(SHOTS / "restored.png"))
