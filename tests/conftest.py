"""Shared fixtures. SLURM tests need the throwaway SLURM that scripts/test starts."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest
from support import skip_or_fail_in_ci, small_cluster

# Real-browser tests run in their own pytest process (scripts/test.d/20-browser-panel):
# Playwright's sync API and the notebook tests' event loops cannot share one.
collect_ignore = [] if os.environ.get("PACKLAB_BROWSER_TESTS") == "1" else ["browser"]


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
def figure(capsys, record_property):
    """Print a measured figure past pytest's capture and record it in the report."""

    def report(name: str, value: object, text: str) -> None:
        record_property(name, value)
        if text:
            with capsys.disabled():
                print(f"\n    [figure] {text}", end="")

    return report


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
