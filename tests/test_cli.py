"""The ``packlab`` command line: CliRunner for quick commands, a real process for ``cluster up``."""

from __future__ import annotations

import os
import signal
import sys
import urllib.request

import pytest
from click.testing import CliRunner
from support import cluster_up, dashboard_binds, read_until

import packlab
import packlab.resources
from packlab.cli import main


@pytest.fixture
def runner():
    return CliRunner()


def test_version(runner):
    r = runner.invoke(main, ["--version"])
    assert r.exit_code == 0
    assert r.output.strip() == f"packlab, version {packlab.__version__}"


def test_profiles_lists_all_five_with_sizes(runner):
    r = runner.invoke(main, ["profiles"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    names = ["data-transform", "ml-training", "rendering", "analytics", "general-batch"]
    assert [line.split(":")[0] for line in lines] == names
    for line, name in zip(lines, names, strict=True):
        p = packlab.PROFILES[name]
        assert p.summary() in line and p.description in line


def test_demo_is_the_whole_pack(runner, tmp_path):
    r = runner.invoke(main, ["demo", "--size", "64MB", "--workers", "1", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    # the job queue: two owners under fair share, a flaky job retried, one dead letter
    assert "jobs for alice (61) and bob (11) under fair share" in r.output
    assert "bob was not starved behind alice" in r.output
    assert "flaky job: ok on retry after 2 attempts" in r.output
    assert "dead-letter queue: 1 job" in r.output
    # the map-reduce, checked against NumPy
    assert r.output.count("matches NumPy") == 4, r.output  # dask and packlab, two questions
    assert "DOES NOT" not in r.output
    assert "61.00 MiB of float64 on 1 worker " in r.output  # 64 MB in whole 256 x 256 time steps
    assert "generated on the workers and kept there" in r.output
    assert "the flaky stage succeeded on attempt 2" in r.output and "right answer" in r.output
    # the five metrics, the cost and the findings, from the run's own store
    for metric in ("queue depth", "worker utilisation", "job duration p50 / p95", "failure rate",
                   "cost per job", "jobs completed today", "top findings"):
        assert metric in r.output, metric
    assert "failure rate              1.4 % (1 of 72 jobs)" in r.output
    assert "USD" in r.output and "aws-on-demand" in r.output and "dead-letter" in r.output
    report = tmp_path / "report.html"
    assert f"report: {report}" in r.output and "Worker health" in report.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["cluster", "up", "--profile", "nope"], "profile='nope' is unknown"),
        (["cluster", "up", "--backend", "nope"], "--backend='nope' is invalid"),
        (["cluster", "up", "--workers", "-1"], "workers=-1 is invalid"),
        (["cluster", "up", "--min-workers", "3", "--max-workers", "1"], "--min-workers=3 is greater"),
        (["cluster", "up", "--workers", "2", "--max-workers", "3"], "pass one or the other"),
        (["cluster", "up", "--walltime", "soon"], "walltime='soon' is invalid"),
        (["cluster", "up", "--spot"], "--spot=True needs --backend='slurm'"),
        (["cluster", "up", "--workers", "many"], "'many' is not a valid integer"),
        (["demo", "--size", "lots"], "size='lots' is invalid"),
        (["demo", "--profile", "nope"], "profile='nope' is unknown"),
    ],
)
def test_bad_input_exits_2_with_one_readable_line(runner, args, message):
    r = runner.invoke(main, args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_cluster_up_named_is_reached_by_packlab_connect_and_leaves_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the child's registry and ours
    seen: list[str] = []
    with cluster_up("--workers", "1", "--name", "cli-run") as proc:
        assert read_until(proc.stdout, "name:", seen) == "cli-run"
        connect = read_until(proc.stdout, "connect:", seen)
        assert connect == 'import packlab; client = packlab.connect("cli-run")'
        with packlab.connect("cli-run") as client:  # TLS: the certificates from ~/.packlab
            assert client.submit(abs, -4).result(timeout=60) == 4
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert os.listdir(tmp_path / ".packlab" / "clusters") == []


@pytest.mark.parametrize("ctrl_c", ["process", "process-group"])
def test_cluster_up_prints_address_and_dashboard_and_stops_on_ctrl_c(ctrl_c):
    seen: list[str] = []
    with cluster_up("--profile", "general-batch", "--workers", "1") as proc:
        address = read_until(proc.stdout, "scheduler:", seen)
        dashboard = read_until(proc.stdout, "dashboard:", seen)
        assert address.startswith("tls://127.0.0.1:")
        # The certificates exist only in that process, so we check the dashboard instead.
        with urllib.request.urlopen(dashboard, timeout=60) as page:
            assert page.status == 200
        assert dashboard_binds(dashboard, proc.pid) == {"127.0.0.1"}  # loopback only
        if ctrl_c == "process":
            proc.send_signal(signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopping cluster" in err
    assert err.rstrip().endswith("stopped.")
    assert "Traceback" not in err


def test_cluster_up_stops_on_ctrl_c_even_when_started_with_sigint_ignored():
    seen: list[str] = []
    with cluster_up("--workers", "0", sigint_ignored=True) as proc:
        assert read_until(proc.stdout, "scheduler:", seen).startswith("tls://")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert err.rstrip().endswith("stopped.")


def test_cluster_up_dashboard_address_opens_it_wider_with_a_warning():
    seen: list[str] = []
    with cluster_up("--workers", "0", "--dashboard-address", ":0") as proc:
        dashboard = read_until(proc.stdout, "dashboard:", seen)
        assert dashboard_binds(dashboard, proc.pid) & {"0.0.0.0", "::"}
        proc.terminate()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "PacklabSecurityWarning" in err and "without authentication" in err


def test_cluster_up_sigterm_also_stops_cleanly():
    seen: list[str] = []
    with cluster_up("--workers", "0", "--insecure") as proc:
        assert read_until(proc.stdout, "scheduler:", seen).startswith("tcp://")
        proc.terminate()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert err.rstrip().endswith("stopped.")


# -- messages name every option as typed; runtime states exit 1 (review 7, finding 16) -----
def test_a_message_about_two_options_names_both_as_typed_everywhere(runner):
    r = runner.invoke(main, ["cluster", "up", "--min-workers", "3", "--max-workers", "1"])
    assert r.exit_code == 2
    assert "set --min-workers <= --max-workers" in r.output
    assert "min_workers" not in r.output


@pytest.mark.skipif(packlab.resources.visible_gpus() > 0, reason="this machine has a GPU")
def test_a_gpu_error_names_the_backend_option(runner):
    r = runner.invoke(main, ["cluster", "up", "--gpus", "1"])
    assert r.exit_code == 2, r.output
    assert "--gpus=1 is more than this machine has" in r.output
    assert "use --gpus=0 here, or --backend='slurm'" in r.output


def test_demo_refuses_a_size_that_would_run_for_hours(runner):
    r = runner.invoke(main, ["demo", "--size", "1PB"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for part in ("--size='1PB'", "909.49 TiB", "more than 4x this machine's memory", "Give at most --size="):
        assert part in r.output


def test_slurm_missing_is_a_runtime_state_exit_1_not_bad_input(runner, tmp_path):
    from packlab.errors import BackendUnavailable, PacklabRuntimeError

    assert issubclass(BackendUnavailable, PacklabRuntimeError)
    assert not issubclass(BackendUnavailable, ValueError)
    r = runner.invoke(main, ["cluster", "up", "--backend", "slurm", "--workers", "0"],
                      env={"PATH": f"{tmp_path}{os.pathsep}{os.path.dirname(sys.executable)}"})
    assert r.exit_code == 1, r.output
    assert "needs SLURM's commands" in r.output and "or use backend='local'" in r.output
    assert "Usage:" not in r.output and "Traceback" not in r.output
