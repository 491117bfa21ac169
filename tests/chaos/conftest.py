"""Chaos tests: packlab's promises broken on purpose, on real processes and filesystems."""

from __future__ import annotations

import pytest


@pytest.fixture
def figure(capsys, record_property):
    """Print a measured figure past pytest's capture and record it in the report (as
    tests/test_slurm.py's ``figure``)."""

    def report(name: str, value: object, text: str) -> None:
        record_property(name, value)
        if text:
            with capsys.disabled():
                print(f"\n    [figure] {text}", end="")

    return report
