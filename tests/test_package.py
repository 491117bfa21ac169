"""The package's public names: all there, and loaded only when used."""

from __future__ import annotations

import subprocess
import sys

import packlab

HEAVY = ("distributed", "dask.array", "numba", "xarray")


def test_import_packlab_loads_no_heavy_library():
    code = f"import sys, packlab; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_every_public_name_resolves_to_the_function_or_class_not_a_module():
    import packlab.clusters.launch  # a submodule import must not shadow the function

    for name in packlab.__all__:
        value = getattr(packlab, name)
        assert type(value).__name__ != "module", name
    assert callable(packlab.launch) and packlab.launch.__name__ == "launch"
    assert packlab.JobQueue.__name__ == "JobQueue" and packlab.mapreduce.__name__ == "mapreduce"
    assert packlab.Pipeline.__name__ == "Pipeline"
    assert packlab.Pipeline.__module__ == "packlab.pipeline.pipeline"
    assert set(packlab.__all__) <= set(dir(packlab))


def test_an_unknown_name_is_an_attribute_error():
    try:
        packlab.lunch  # noqa: B018
    except AttributeError as e:
        assert "lunch" in str(e)
    else:
        raise AssertionError("packlab.lunch did not raise")


def test_the_command_line_starts_without_heavy_imports():
    code = ("import sys; from click.testing import CliRunner; from packlab.cli import main; "
            "r = CliRunner().invoke(main, ['--version']); assert r.exit_code == 0, r.output; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
