"""Shared fixtures. SLURM tests need the throwaway SLURM that scripts/test starts."""

from __future__ import annotations

import functools
import os
import pathlib
import re
import shutil
import warnings

import pytest
from support import skip_or_fail_in_ci, small_cluster

# Real-browser tests run in their own pytest process (scripts/test.d/20-browser-panel):
# Playwright's sync API and the notebook tests' event loops cannot share one.
collect_ignore = [] if os.environ.get("PACKLAB_BROWSER_TESTS") == "1" else ["browser"]


# Two pytest processes (pytest-xdist: ``-n 2 --dist loadgroup`` in scripts/test). Each test
# file runs whole in one process, as with --dist loadfile (a module's cluster fixture starts
# once), except the files of a serial group: those run one after another in one process
# while the other process runs the rest. The SLURM files (any test marked slurm) are one
# group: their tests share the test SLURM's one node, whose CPUs one test's workers (or
# its preempting batch job) take whole, and test_slurm_checkout.py's second SLURM's port.
# The group is found by file, from the source, because the xdist_group mark no longer
# reaches the scheduler under pytest 9.2 (pytest-xdist issue #1386); the "@group" suffix
# xdist gives a marked test where it still works is honoured too.
SERIAL_GROUPS = {"slurm": re.compile(r"\bmark\.slurm\b")}


@functools.cache
def _serial_group(path: str) -> str | None:
    try:
        source = pathlib.Path(path).read_text()
    except OSError:  # not a file of ours (a doctest's module is read the same way)
        return None
    return next((g for g, pattern in SERIAL_GROUPS.items() if pattern.search(source)), None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from collections import OrderedDict

    from xdist.scheduler import LoadScopeScheduling

    class GroupsFirst(OrderedDict):
        """xdist's queue of work units (most tests first), the serial groups ahead of
        all: the longest unit starts at once instead of last, beside an idle process."""

        def __setitem__(self, scope, nodeids):
            super().__setitem__(scope, nodeids)
            if scope in SERIAL_GROUPS:
                self.move_to_end(scope, last=False)

    class FilesAndGroups(LoadScopeScheduling):
        """A test's unit of work: its serial group, else its file."""

        def __init__(self, config, log=None):
            super().__init__(config, log)
            if isinstance(self.workqueue, OrderedDict) and not self.workqueue:
                self.workqueue = GroupsFirst()

        def _split_scope(self, nodeid: str) -> str:
            at = nodeid.rfind("@")
            if at > nodeid.rfind("]"):  # an "@" in a parametrize id is not a group
                return nodeid[at + 1:]
            path = nodeid.split("::", 1)[0]
            return _serial_group(str(config.rootpath / path)) or path

    return FilesAndGroups(config, log)


def slurm_ready() -> str | None:
    """None when a test SLURM is up, else the reason it is not."""
    if not os.environ.get("PACKLAB_TEST_SLURM"):
        return "PACKLAB_TEST_SLURM is unset: run the tests through scripts/test, which starts SLURM"
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH"
    return None


@pytest.fixture(autouse=True)
def _require_slurm(request):
    """SLURM tests skip loudly without a test SLURM, and fail instead under CI=true."""
    if "slurm" not in request.keywords:
        return
    skip_or_fail_in_ci(slurm_ready(), "SLURM unavailable in CI (these tests must run there)",
                       "SLURM TESTS SKIPPED")


@pytest.fixture
def figure(request, capsys, record_property):
    """Print a measured figure past pytest's capture and record it in the report."""

    def report(name: str, value: object, text: str) -> None:
        record_property(name, value)
        if not text:
            return
        if os.environ.get("PYTEST_XDIST_WORKER"):
            # What an xdist worker prints goes nowhere: the line goes with the test's
            # report to the main process, which prints it (pytest_runtest_logreport).
            request.node.user_properties.append((FIGURE_LINE, text))
        else:
            with capsys.disabled():
                print(f"\n    [figure] {text}", end="")

    return report


FIGURE_LINE = "figure-line"
_config: list[pytest.Config] = []


def pytest_configure(config):
    _config[:] = [config]


def pytest_runtest_logreport(report):
    """In the main process of an xdist run: the [figure] lines of a test, once it is done."""
    if report.when != "teardown" or os.environ.get("PYTEST_XDIST_WORKER") or not _config:
        return
    terminal = _config[0].pluginmanager.get_plugin("terminalreporter")
    for name, text in report.user_properties:
        if name == FIGURE_LINE and terminal is not None:
            terminal.write(f"\n    [figure] {text}", flush=True)  # as a worker-less run prints it


@pytest.fixture
def local_cluster():
    with small_cluster() as pc:
        yield pc


@pytest.fixture(autouse=True)
def _no_leaked_client_config():
    """A Client dropped without close() leaves dask's scheduler set to a client that is
    gone, and every later plain .compute() fails. Reset it so one leak stays one failure
    and say where it was noticed."""
    yield
    import dask
    from distributed.client import _get_global_client

    if dask.config.get("scheduler", None) == "dask.distributed" and _get_global_client() is None:
        dask.config.set(scheduler=None)
        warnings.warn("a distributed.Client was left unclosed by this or an earlier test", stacklevel=1)
