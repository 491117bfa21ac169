"""Every notebook in notebooks/ is executed top to bottom; an error in any cell fails.

Notebooks read ``PACKLAB_NOTEBOOK_SIZE=small`` (set here) to run at a CI-friendly size.
"""

from __future__ import annotations

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("PACKLAB_NOTEBOOK_SIZE", "small")
    monkeypatch.chdir(tmp_path)  # stores and checkpoints land in a scratch dir
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
