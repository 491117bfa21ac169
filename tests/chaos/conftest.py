"""Fixtures of the chaos suite: faults injected for real (signals, SLURM preemption,
walltime expiry, full or read-only stores) and the figures each test prints."""

from __future__ import annotations

import pytest


@pytest.fixture
def figure(capsys, record_property):
    """Print a measured figure past pytest's capture and record it in the report."""

    def report(name: str, value: object, text: str) -> None:
        record_property(name, value)
        if text:
            with capsys.disabled():
                print(f"\n    [figure] {text}", end="")

    return report
