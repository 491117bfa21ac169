"""packlab's architecture, checked: the import-linter contract of pyproject.toml (layers,
no cycle between packages), no ``_private`` name of one package used by another, and
the architecture page (docs/architecture.md) in step with the code."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest
from support import REPO

sys.path.insert(0, os.path.join(REPO, "scripts"))
import architecture

PACKLAB = os.path.join(REPO, "packlab")


def lint_imports() -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or os.path.join(os.path.dirname(sys.executable), "lint-imports")
    return subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_import_linter_contract_is_kept():
    r = lint_imports()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "BROKEN" not in r.stdout, r.stdout


def test_the_contract_fails_on_an_import_upward(tmp_path):
    """The check can fail: a copy of the package where the store imports telemetry breaks it."""
    copy = tmp_path / "repo"
    shutil.copytree(PACKLAB, copy / "packlab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPO, "pyproject.toml"), copy / "pyproject.toml")
    with open(copy / "packlab" / "store" / "sqlite.py", "a") as f:
        f.write("\nfrom ..telemetry import tables  # noqa: E402,F401\n")
    exe = shutil.which("lint-imports") or os.path.join(os.path.dirname(sys.executable), "lint-imports")
    r = subprocess.run([exe, "--no-cache"], cwd=copy, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(copy)})
    assert r.returncode != 0 and "packlab.store is not allowed to import packlab.telemetry" in r.stdout, \
        r.stdout + r.stderr


def test_no_package_uses_a_private_name_of_another():
    assert architecture.private_names_across_packages(PACKLAB) == []


def test_the_private_name_check_sees_an_import_and_an_attribute():
    tree = ast.parse("from ..queue.schema import _CORE\nfrom ..queue import lease\nlease._when(0)\n")
    found = architecture.private_uses(tree, "packlab.telemetry.x", is_package=False)
    assert {(name, target) for _, name, target in found} == {("_CORE", "packlab.queue.schema"),
                                                            ("_when", "packlab.queue.lease")}


def test_the_architecture_page_is_the_generated_one():
    with open(os.path.join(REPO, "docs", "architecture.md")) as f:
        page = f.read()
    assert page == architecture.page(REPO), "stale: run python scripts/architecture.py"


@pytest.mark.parametrize("package", architecture.PACKAGES)
def test_every_package_has_a_docstring_that_says_what_it_is(package):
    assert architecture.summary(os.path.join(REPO, *package.split(".")))
