"""Helpers shared by test modules. A plain module, not conftest: tests/cudasim has its own
conftest.py, and ``from conftest import ...`` picks whichever was imported first."""

from __future__ import annotations

import warnings

import packlab


def small_cluster() -> packlab.PackCluster:
    """A small TLS local cluster: 2 workers x 1 thread, 1 GiB each (clamping notes silenced)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        return packlab.launch(workers=2, cores=1, memory="1GiB", wait=True)
