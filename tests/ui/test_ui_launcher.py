"""ClusterLauncher driven from Python on real local clusters: fill the form, click, read it."""

from __future__ import annotations

import re
import threading
import time
import urllib.request

import pytest
from distributed.deploy.spec import SpecCluster

import packlab
from packlab.clusters import BACKENDS
from packlab.resources import this_machine
from packlab.ui import ClusterLauncher, launch_arguments, scale_action

SMALL = {"cores": 1, "memory": "1GiB"}


@pytest.fixture
def ui():
    launcher = ClusterLauncher(refresh_interval=None, **SMALL)
    yield launcher
    launcher.stop()  # never leave a cluster behind, whatever the test did


def running_clusters() -> int:
    return sum(1 for c in list(SpecCluster._instances) if c.status.name == "running")


def wait_until(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def workers_shown(ui) -> int:
    m = re.search(r"(\d+) workers? connected", ui.status.value)
    assert m, ui.status.value
    return int(m.group(1))


def test_form_lists_registered_backends_and_all_profiles(ui):
    assert list(ui.backend.options) == sorted(BACKENDS)
    assert list(ui.profile.options) == list(packlab.PROFILES)
    assert ui.backend.value == "local"
    assert "No cluster running" in ui.status.value
    assert not ui.launch_button.disabled
    assert ui.scale_button.disabled and ui.stop_button.disabled


def test_profile_change_fills_its_gpus_and_walltime(ui):
    ui.profile.value = "ml-training"
    assert ui.gpus.value == 1
    assert "08:00:00" in ui.walltime.placeholder
    ui.profile.value = "analytics"
    assert ui.gpus.value == 0


def test_launch_scale_stop(ui):
    ui.profile.value = "general-batch"
    ui.min_workers.value = ui.max_workers.value = 1
    ui.launch_button.click()
    assert ui.error.value == ""
    pc = ui.cluster
    assert isinstance(pc, packlab.PackCluster)
    assert pc.adaptive is None  # min == max: a fixed size
    assert pc.profile.cores == 1 and pc.profile.name == "general-batch"
    assert ui.launch_button.disabled and not ui.stop_button.disabled and not ui.scale_button.disabled
    assert ui.profile.disabled and not ui.max_workers.disabled

    pc.wait_for_workers(1, timeout=60)
    ui.refresh()
    assert workers_shown(ui) == 1
    assert "profile general-batch" in ui.status.value
    assert re.search(r"cost so far: \d+\.\d\d USD", ui.status.value), ui.status.value  # from telemetry
    link = re.search(r'<a href="([^"]+)"[^>]*>dashboard</a>', ui.status.value).group(1)
    assert link == pc.dashboard_link
    with urllib.request.urlopen(link, timeout=30) as r:
        assert r.status == 200
    assert pc.client.submit(sum, [1, 2]).result() == 3

    ui.max_workers.value = ui.min_workers.value = 2
    ui.scale_button.click()
    assert ui.error.value == ""
    pc.wait_for_workers(2, timeout=60)
    ui.refresh()
    assert workers_shown(ui) == 2

    ui.min_workers.value = 0
    ui.scale_button.click()
    assert ui.error.value == ""
    assert (pc.adaptive.minimum, pc.adaptive.maximum) == (0, 2)
    assert "adaptive 0..2" in ui.status.value

    ui.stop_button.click()
    assert ui.cluster is None
    assert pc.cluster.status.name == "closed"
    assert "No cluster running" in ui.status.value
    assert not ui.launch_button.disabled and ui.stop_button.disabled


def test_launch_adaptive_when_min_differs_from_max(ui):
    ui.min_workers.value, ui.max_workers.value = 0, 2
    ui.launch_button.click()
    assert ui.error.value == ""
    assert (ui.cluster.adaptive.minimum, ui.cluster.adaptive.maximum) == (0, 2)
    assert "adaptive 0..2" in ui.status.value


def test_periodic_refresh_shows_workers_without_refresh_call():
    ui = ClusterLauncher(refresh_interval=0.2, **SMALL)
    try:
        ui.launch_button.click()
        assert ui.error.value == ""
        assert len(refresh_threads()) == 1
        wait_until(lambda: "1 worker connected" in ui.status.value, what="the refresh thread")
    finally:
        ui.stop_button.click()
    assert "No cluster running" in ui.status.value
    wait_until(lambda: not refresh_threads(), timeout=10, what="the refresh thread to end")


def refresh_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "packlab-launcher-refresh"]


def test_cost_source_hook_is_shown_and_its_failure_is_contained():
    calls = []

    def cost(pc):
        calls.append(pc)
        return 0.125

    ui = ClusterLauncher(refresh_interval=None, cost_source=cost, min_workers=0, max_workers=0, **SMALL)
    try:
        ui.launch_button.click()
        assert "cost so far: $0.12" in ui.status.value
        assert calls[-1] is ui.cluster
        ui.cost_source = lambda pc: 1 / 0
        ui.refresh()
        assert "cost: unavailable" in ui.status.value
    finally:
        ui.stop()


@pytest.mark.parametrize(
    "fill, field",
    [
        ({"min_workers": 3, "max_workers": 1}, "min_workers=3"),
        ({"walltime": "soon"}, "walltime='soon'"),
        ({"min_workers": -1, "max_workers": -1}, "workers=-1"),
        ({"spot": True}, "spot=True"),
        ({"backend": "slurm", "partition": "nope"}, "backend='slurm'"),
    ],
    ids=["min>max", "walltime", "negative", "spot-local", "slurm-missing"],
)
def test_bad_input_is_a_readable_message_and_no_cluster(ui, fill, field, monkeypatch):
    if fill.get("backend") == "slurm":
        monkeypatch.setenv("PATH", "/nonexistent")  # SLURM's commands are missing here
    before = running_clusters()
    for name, value in fill.items():
        getattr(ui, name).value = value
    ui.launch_button.click()  # must not raise
    assert ui.cluster is None
    assert running_clusters() == before
    assert field in ui.error.value
    assert "Traceback" not in ui.error.value
    assert not ui.launch_button.disabled
    assert "No cluster running" in ui.status.value


def test_error_is_html_escaped(ui):
    ui.walltime.value = "<b>soon</b>"
    ui.launch_button.click()
    assert "&lt;b&gt;soon&lt;/b&gt;" in ui.error.value
    assert "<b>soon" not in ui.error.value


def test_error_clears_on_next_success(ui):
    ui.walltime.value = "soon"
    ui.launch_button.click()
    assert ui.error.value
    ui.walltime.value = "00:30:00"
    ui.min_workers.value = ui.max_workers.value = 0
    ui.launch_button.click()
    assert ui.error.value == ""
    assert ui.cluster.profile.walltime == 1800


def test_launch_twice_does_not_leak_a_cluster(ui):
    before = running_clusters()
    ui.min_workers.value = ui.max_workers.value = 0
    ui.launch_button.click()
    first = ui.cluster
    ui.launch_button.click()  # disabled in the browser, but code can still click it
    assert ui.cluster is first
    assert running_clusters() == before + 1
    assert "already running" in ui.error.value
    assert first.cluster.status.name == "running"


def test_cluster_closed_from_code_frees_the_form(ui):
    ui.min_workers.value = ui.max_workers.value = 0
    ui.launch_button.click()
    ui.cluster.close()
    ui.refresh()
    assert ui.cluster is None
    assert "No cluster running" in ui.status.value
    assert not ui.launch_button.disabled and ui.stop_button.disabled
    ui.launch_button.click()
    assert ui.error.value == "" and ui.cluster is not None


@pytest.mark.slurm
def test_unknown_partition_on_real_slurm_lists_the_real_ones(ui):
    before = running_clusters()
    ui.backend.value = "slurm"
    ui.partition.value = "no-such-partition"
    ui.launch_button.click()
    assert "partition='no-such-partition' does not exist" in ui.error.value
    assert "sinfo lists" in ui.error.value
    assert ui.cluster is None and running_clusters() == before


def test_scale_bad_bounds_and_scale_without_cluster(ui):
    ui.scale_button.click()
    assert "no cluster is running" in ui.error.value
    ui.min_workers.value = ui.max_workers.value = 0
    ui.launch_button.click()
    ui.min_workers.value, ui.max_workers.value = 2, 1
    ui.scale_button.click()
    assert "minimum=2 is greater than maximum=1" in ui.error.value  # PackCluster.adapt's names
    assert ui.cluster is not None  # a bad Scale leaves the cluster alone


def test_a_bad_keyword_value_is_one_readable_line(ui):
    ui.min_workers.value = ui.max_workers.value = 0
    ui.launch_kwargs = {"worker_class": object()}  # LocalCluster cannot use this
    ui.launch_button.click()
    assert ui.cluster is None
    assert "worker_class=&lt;object object" in ui.error.value
    assert "expected a class, or the import path of one" in ui.error.value
    assert "distributed.Nanny" in ui.error.value


class _BrokenForm(ClusterLauncher):
    """A launcher subclass whose form reading fails: an error packlab did not foresee."""

    def values(self):
        raise RuntimeError("boom")


def test_unexpected_exception_is_one_line_and_logged(caplog):
    ui = _BrokenForm(refresh_interval=None, cores=1, memory="1GiB")
    ui.launch_button.click()
    assert ui.cluster is None
    assert "unexpected error during launch: RuntimeError: boom" in ui.error.value
    assert "\n" not in ui.error.value
    assert any("launch failed" in r.getMessage() for r in caplog.records)


def test_clamping_notes_are_shown_in_the_widget():
    cpus = this_machine().cpus
    ui = ClusterLauncher(refresh_interval=None, min_workers=0, max_workers=0, cores=cpus + 1)
    try:
        ui.launch_button.click()
        assert ui.error.value == ""
        assert ui.cluster.profile.cores == cpus
        assert f"this machine has {cpus} CPUs" in ui.notes.value
    finally:
        ui.stop()


def test_launch_arguments_fixed_adaptive_and_profile_gpus():
    gpu_profile = packlab.PROFILES["ml-training"]
    base = {"backend": "local", "profile": "ml-training", "spot": False, "walltime": "", "partition": ""}
    assert launch_arguments({**base, "min_workers": 2, "max_workers": 2, "gpus": 1}, gpu_profile) == {
        "backend": "local", "profile": "ml-training", "workers": 2}
    assert launch_arguments({**base, "min_workers": 0, "max_workers": 3, "gpus": 0}, gpu_profile) == {
        "backend": "local", "profile": "ml-training", "min_workers": 0, "max_workers": 3, "gpus": 0}
    assert launch_arguments({**base, "spot": True, "partition": " gpu "}) == {
        "backend": "local", "profile": "ml-training", "spot": True, "partition": "gpu"}
    assert scale_action(2, 2) == ("scale", {"n": 2})
    assert scale_action(1, 5) == ("adapt", {"minimum": 1, "maximum": 5})
