"""Helpers of the real-browser tests (a module of its own: test modules import it by name)."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("PACKLAB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
HERE = pathlib.Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_telemetry(store: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import packlab
    from packlab.errors import PacklabError

    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, "the workload ended before writing telemetry"
        try:
            packlab.monitor(store)
            return
        except PacklabError:
            time.sleep(0.2)
    pytest.fail(f"no telemetry in {store} after {timeout} s")


