"""Fixtures of the real-browser tests: Debian's Chromium driven by Playwright (never
``playwright install``), a recorded run, and ``packlab dashboard`` processes.

Run in a pytest process of their own (scripts/test.d/20-browser-panel): Playwright's sync
API cannot share a process with the event loops of the notebook tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from browser_support import ARGS, CHROMIUM, HERE, SHOTS, free_port


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (scripts/test.d does)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1400})
    pg = ctx.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


@pytest.fixture(scope="session")
def run_store(tmp_path_factory):
    """A store of a finished run (about 4 s of queue work)."""
    store = str(tmp_path_factory.mktemp("run") / "run.db")
    subprocess.run([sys.executable, str(HERE / "workload.py"), store, "4"], check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return store


class Dashboard:
    def __init__(self, store: str, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "packlab.cli", "dashboard", "--store", store,
                                      "--port", str(self.port), *args], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("packlab dashboard: "), line
        self.url = line.split(": ", 1)[1].strip()
        self.local = f"http://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def dashboard():
    started: list[Dashboard] = []

    def start(store: str, *args: str) -> Dashboard:
        d = Dashboard(store, *args)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def have_jupyterlab() -> bool:
    return shutil.which("jupyter-lab", path=os.path.dirname(sys.executable)) is not None
