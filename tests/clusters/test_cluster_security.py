"""Safe defaults on a shared machine, read from the real sockets and files.

The dashboard's bind address comes from the listening sockets of the process that runs
the scheduler (psutil), not from what packlab says it asked for.
"""

from __future__ import annotations

import os
import stat
import urllib.request
import warnings

import dask
import pytest
from support import assert_no_open_listener, dashboard_binds, listening, network_interface

import packlab
from packlab.clusters import PacklabSecurityWarning
from packlab.errors import PacklabError
from packlab.files import private_directory

SMALL = {"cores": 1, "memory": "1GiB"}


def quiet(**kwargs) -> packlab.PackCluster:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        return packlab.launch(**kwargs)


def test_local_dashboard_listens_on_loopback_only():
    with quiet(workers=1, wait=True, **SMALL) as pc:
        assert dashboard_binds(pc.dashboard_link) == {"127.0.0.1"}
        # Every socket of the scheduler, the nanny and the worker (the same check as
        # tests/chaos/test_slurm_listeners.py's): all on loopback, the comm ports TLS.
        counts = assert_no_open_listener(pc)
    assert counts == {"comm-loopback": 3, "http-loopback": 2}


def test_the_dashboard_link_names_where_it_listens_when_the_scheduler_is_on_the_network():
    # Dask's link took the scheduler's host (the network address) for a dashboard that
    # listens on 127.0.0.1 only: the link shown and registered could not be opened.
    with quiet(workers=0, interface=network_interface(), **SMALL) as pc:
        assert not pc.scheduler_address.startswith("tls://127.")
        assert pc.dashboard_link.startswith("http://127.0.0.1:")
        assert urllib.request.urlopen(pc.dashboard_link, timeout=10).status == 200


@pytest.mark.parametrize("how", ["argument", "setting"])
def test_a_wider_dashboard_is_explicit_and_warns(how):
    kwargs = {"dashboard_address": ":0"} if how == "argument" else {}
    with dask.config.set({"packlab.dashboard.address": ":0"} if how == "setting" else {}):
        with pytest.warns(PacklabSecurityWarning, match="without authentication"):
            pc = quiet(workers=0, **SMALL, **kwargs)
    with pc:
        assert dashboard_binds(pc.dashboard_link) & {"0.0.0.0", "::"}


@pytest.mark.parametrize("value", ["8787", 8787, "127.0.0.1:http", ["127.0.0.1:0"], "1.2.3.4:99999"])
def test_a_malformed_dashboard_address_is_an_error(value):
    with pytest.raises(PacklabError, match=r"dashboard_address=.* is invalid: expected an address") as e:
        packlab.launch(workers=0, dashboard_address=value, **SMALL)
    assert "127.0.0.1:8787" in str(e.value)


def test_security_false_setting_warns_and_a_string_is_an_error(monkeypatch):
    with dask.config.set({"packlab.security": False}):
        with pytest.warns(PacklabSecurityWarning, match="run code as you"):
            with quiet(workers=0, **SMALL) as pc:
                assert pc.scheduler_address.startswith("tcp://")
    with pytest.raises(PacklabError, match="security='off' is invalid") as e:
        packlab.launch(workers=0, security="off", **SMALL)
    assert "pass the bool False" in str(e.value)


def test_security_off_from_the_environment_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("DASK_PACKLAB__SECURITY", "off")
    dask.config.refresh()
    try:
        with pytest.raises(PacklabError, match=r"packlab\.security='off' is invalid") as e:
            packlab.launch(workers=0, **SMALL)
        assert "DASK_PACKLAB__SECURITY" in str(e.value)
    finally:
        monkeypatch.delenv("DASK_PACKLAB__SECURITY")
        dask.config.refresh()


# -- private directories --------------------------------------------------------------
def test_private_directory_is_created_0700_with_its_parents(tmp_path):
    d = private_directory(str(tmp_path / "a" / "b"), "dir")
    for p in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o700
    assert d == str(tmp_path / "a" / "b")


def test_private_directory_tightens_an_open_directory_of_ours(tmp_path):
    d = tmp_path / "open"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)
    private_directory(str(d), "dir")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


def test_private_directory_never_follows_a_planted_symlink(tmp_path):
    target = tmp_path / "victim"
    target.mkdir(mode=0o755)
    link = tmp_path / "shared"
    link.symlink_to(target)
    with pytest.raises(PacklabError, match="symbolic link") as e:
        private_directory(str(link), "jobqueue.slurm.shared-temp-directory")
    assert "jobqueue.slurm.shared-temp-directory" in str(e.value)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755  # untouched
    assert os.listdir(target) == []


def test_private_directory_refuses_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(PacklabError, match="not a directory"):
        private_directory(str(f), "dir")


# -- the SLURM backend's directories and keywords (no SLURM needed to build them) -------
def slurm_kwargs_in(home, monkeypatch, **settings):
    from packlab.clusters.base import ClusterRequest
    from packlab.clusters.slurm import slurm_kwargs

    monkeypatch.setenv("HOME", str(home))
    profile = packlab.PROFILES["general-batch"]
    request = ClusterRequest(backend="slurm", profile=profile, partition="batch")
    with dask.config.set({"jobqueue.slurm.shared-temp-directory": None,
                          "jobqueue.slurm.log-directory": None, **settings}):
        return slurm_kwargs(request, profile, None)


def test_slurm_default_directories_are_owner_only_even_if_packlab_dir_was_open(tmp_path, monkeypatch):
    (tmp_path / ".packlab").mkdir(mode=0o755)
    os.chmod(tmp_path / ".packlab", 0o755)
    kw = slurm_kwargs_in(tmp_path, monkeypatch)
    top = tmp_path / ".packlab"
    for d in (top, top / "slurm", top / "slurm" / "logs"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    assert kw["shared_temp_directory"] == str(tmp_path / ".packlab" / "slurm")
    assert kw["log_directory"] == str(tmp_path / ".packlab" / "slurm" / "logs")
    assert kw["scheduler_options"]["dashboard_address"] == "127.0.0.1:0"


def test_slurm_refuses_a_symlink_planted_as_its_shared_directory(tmp_path, monkeypatch):
    (tmp_path / ".packlab").mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / ".packlab" / "slurm").symlink_to(elsewhere)
    with pytest.raises(PacklabError, match=r"jobqueue\.slurm\.shared-temp-directory=.*symbolic link"):
        slurm_kwargs_in(tmp_path, monkeypatch)
    assert os.listdir(elsewhere) == []


def test_slurm_keywords_extend_the_sites_lists_and_leave_its_settings_alone(tmp_path, monkeypatch):
    kw = slurm_kwargs_in(tmp_path, monkeypatch, **{
        "jobqueue.slurm.job-extra-directives": ["--qos=high"],
        "jobqueue.slurm.worker-extra-args": ["--resources", "SITE=1"],
        "jobqueue.slurm.scheduler-options": {"idle_timeout": 60},
        "jobqueue.slurm.local-directory": "$TMPDIR",
    })
    assert kw["job_extra_directives"] == ["--qos=high"]
    assert kw["worker_extra_args"][2:4] == ["--resources", "SITE=1"]
    assert "--lifetime" in kw["worker_extra_args"]
    assert kw["scheduler_options"] == {"idle_timeout": 60, "dashboard_address": "127.0.0.1:0"}
    # What packlab has no opinion on is not passed, so dask-jobqueue reads the site's value.
    for key in ("local_directory", "python", "interface", "account"):
        assert key not in kw


def worker_cli_dashboard(worker_args: list[str]) -> str:
    """The dashboard address ``dask worker`` really takes from these arguments (its own
    command-line parser, as in the job script)."""
    from distributed.cli.dask_worker import main

    return main.make_context("dask-worker", ["tls://127.0.0.1:1", *worker_args]).params["dashboard_address"]


def test_slurm_workers_dashboard_is_on_loopback_unless_asked_and_then_warns(tmp_path, monkeypatch):
    # dask worker's default is ":0", every interface of the compute node: its dashboard
    # and /metrics were open to anyone who could reach the node (tests/chaos/ found it).
    with warnings.catch_warnings():
        warnings.simplefilter("error", PacklabSecurityWarning)
        kw = slurm_kwargs_in(tmp_path, monkeypatch)
    assert worker_cli_dashboard(kw["worker_extra_args"]) == "127.0.0.1:0"
    # A site's or a user's own address comes later, wins, and warns when it is wider.
    with pytest.warns(PacklabSecurityWarning, match=r"worker-extra-args --dashboard-address=':8790'"):
        kw = slurm_kwargs_in(tmp_path, monkeypatch,
                             **{"jobqueue.slurm.worker-extra-args": ["--dashboard-address", ":8790"]})
    assert worker_cli_dashboard(kw["worker_extra_args"]) == ":8790"
    with pytest.warns(PacklabSecurityWarning, match=r"worker_extra_args --dashboard-address='0\.0\.0\.0:0'"):
        request = slurm_request(worker_extra_args=["--dashboard-address=0.0.0.0:0"])
        kw = slurm_kwargs_for(request, tmp_path, monkeypatch)
    assert worker_cli_dashboard(kw["worker_extra_args"]) == "0.0.0.0:0"
    with pytest.raises(PacklabError, match=r"worker_extra_args --dashboard-address='8787' is invalid"):
        request = slurm_request(worker_extra_args=["--dashboard-address", "8787"])
        slurm_kwargs_for(request, tmp_path, monkeypatch)


def test_bad_input_beside_security_false_is_only_an_error_not_also_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PacklabSecurityWarning)
        with pytest.raises(PacklabError, match="cores=0"):
            packlab.launch(workers=0, security=False, dashboard_address=":0", cores=0, memory="1GiB")


# -- backend keywords go through the same checks (review 7, findings 2, 3, 6, 14, 15) ------
def test_a_dashboard_address_in_scheduler_kwargs_is_the_dashboard_and_warns():
    warned = r"scheduler_kwargs\['dashboard_address'\]='0\.0\.0\.0:0'"
    with pytest.warns(PacklabSecurityWarning, match=warned):
        pc = quiet(workers=0, scheduler_kwargs={"dashboard_address": "0.0.0.0:0"}, **SMALL)
    with pc:
        # dashboard_link's port is the one really open, on every interface as asked
        assert dashboard_binds(pc.dashboard_link) == {"0.0.0.0"}


def test_a_loopback_dashboard_in_scheduler_kwargs_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PacklabSecurityWarning)
        pc = quiet(workers=0, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, **SMALL)
    with pc:
        assert dashboard_binds(pc.dashboard_link) == {"127.0.0.1"}


def test_a_worker_dashboard_open_to_all_warns_and_is_what_the_worker_binds():
    with pytest.warns(PacklabSecurityWarning, match=r"worker_dashboard_address='0\.0\.0\.0:0'"):
        pc = quiet(workers=1, worker_dashboard_address="0.0.0.0:0", wait=True, **SMALL)
    with pc:
        (addr, info), = pc.client.scheduler_info()["workers"].items()
        pid = pc.client.run(os.getpid)[addr]
        port = info["services"]["dashboard"]
        assert {ip for ip, p in listening(pid) if p == port} == {"0.0.0.0"}


def test_an_ipv6_dashboard_is_refused_before_any_warning():
    # Dask splits a dashboard address at each ':', so "::1" once warned "will listen on :"
    # and then failed inside Dask.
    with warnings.catch_warnings():
        warnings.simplefilter("error", PacklabSecurityWarning)
        with pytest.raises(PacklabError, match=r"dashboard_address='::1' is invalid.*not an IPv6"):
            packlab.launch(dashboard_address="::1", workers=0, **SMALL)


@pytest.mark.parametrize("bad", [{"wait": "soon"}, {"bogus_kw": 1}, {"partition": "gpu"},
                                 {"preload": 3}], ids=lambda b: next(iter(b)))
def test_security_false_does_not_warn_for_a_request_that_is_then_refused(bad):
    with warnings.catch_warnings():
        warnings.simplefilter("error", PacklabSecurityWarning)
        with pytest.raises(PacklabError) as e:
            packlab.launch(workers=0, security=False, dashboard_address=":0", **SMALL, **bad)
    assert next(iter(bad)) in str(e.value)


def test_a_security_object_that_cannot_work_is_blamed_not_the_keywords():
    from distributed import Security

    from packlab.clusters import ClusterStartError

    with pytest.raises(ClusterStartError) as e:
        quiet(workers=1, security=Security(), **SMALL)
    assert "security=" in str(e.value) and "security=True" in str(e.value)
    assert "keywords" not in str(e.value)


def slurm_request(**backend_kwargs):
    """launch()'s own checks for a SLURM request (no SLURM needed: nothing starts)."""
    from packlab.clusters.launch import prepare

    return prepare(backend="slurm", workers=0, **backend_kwargs)[0]


def slurm_kwargs_for(request, home, monkeypatch):
    from packlab.clusters.slurm import slurm_kwargs

    monkeypatch.setenv("HOME", str(home))
    unset = {"jobqueue.slurm.shared-temp-directory": None, "jobqueue.slurm.log-directory": None}
    with dask.config.set(unset):
        return slurm_kwargs(request, request.profile, None)


def test_slurm_scheduler_options_cannot_undo_the_loopback_dashboard_silently(tmp_path, monkeypatch):
    with pytest.warns(PacklabSecurityWarning, match=r"scheduler_options\['dashboard_address'\]"):
        request = slurm_request(scheduler_options={"dashboard_address": "0.0.0.0:0", "idle_timeout": 60})
    kw = slurm_kwargs_for(request, tmp_path, monkeypatch)
    assert kw["scheduler_options"] == {"idle_timeout": 60, "dashboard_address": "0.0.0.0:0"}
    kw = slurm_kwargs_for(slurm_request(scheduler_options={"idle_timeout": 60}), tmp_path, monkeypatch)
    assert kw["scheduler_options"]["dashboard_address"] == "127.0.0.1:0"


def test_slurm_directory_keywords_are_made_private_too(tmp_path, monkeypatch):
    shared, logs = tmp_path / "open777", tmp_path / "logs777"
    for d in (shared, logs):
        d.mkdir()
        os.chmod(d, 0o777)
    request = slurm_request(shared_temp_directory=str(shared), log_directory=str(logs))
    kw = slurm_kwargs_for(request, tmp_path, monkeypatch)
    assert (kw["shared_temp_directory"], kw["log_directory"]) == (str(shared), str(logs))
    for d in (shared, logs):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(PacklabError, match=r"shared_temp_directory=.*symbolic link") as e:
        slurm_kwargs_for(slurm_request(shared_temp_directory=str(tmp_path / "link")), tmp_path, monkeypatch)
    assert "Remove it, or set the setting to a directory of yours" in str(e.value)
    with pytest.raises(PacklabError, match=r"log_directory=3 is invalid: expected a file path"):
        slurm_request(log_directory=3)


def test_slurm_list_keywords_given_as_one_string_are_one_item(tmp_path, monkeypatch):
    request = slurm_request(job_extra_directives="--qos=high", worker_extra_args="--no-nanny")
    kw = slurm_kwargs_for(request, tmp_path, monkeypatch)
    assert kw["job_extra_directives"][-1] == "--qos=high"
    assert kw["worker_extra_args"][-1] == "--no-nanny" and "-" not in kw["worker_extra_args"]
    with pytest.raises(PacklabError) as e:
        slurm_request(job_extra_directives=[1])
    assert_said(str(e.value), "job_extra_directives=[1]", "a list of strings", '["--qos=high"]')


def test_a_local_list_keyword_given_as_one_string_is_one_module():
    with quiet(workers=1, preload="os", wait=True, **SMALL) as pc:  # not 'o', 's'
        assert pc.client.submit(sum, [1, 2]).result(timeout=60) == 3


def assert_said(message, *parts):
    for part in parts:
        assert part in message, f"{part!r} not in {message}"


# -- private_directory walks the path without following a planted link (finding 8) ---------
def test_private_directory_refuses_a_link_in_a_parent_that_others_can_write(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # anyone could have planted the link
    attacker = tmp_path / "attacker"
    attacker.mkdir(mode=0o755)
    (shared / "link").symlink_to(attacker)
    with pytest.raises(PacklabError) as e:
        private_directory(str(shared / "link" / "slurm"), "jobqueue.slurm.shared-temp-directory")
    assert_said(str(e.value), "jobqueue.slurm.shared-temp-directory=", str(shared / "link" / "slurm"),
                "passes through one ('link')", "Remove it")
    assert os.listdir(attacker) == []


@pytest.mark.skipif(os.getuid() != 0, reason="giving a link to another user needs root")
def test_private_directory_refuses_a_parent_link_owned_by_another_user(tmp_path):
    attacker = tmp_path / "attacker"
    attacker.mkdir()
    (tmp_path / "link").symlink_to(attacker)
    os.lchown(tmp_path / "link", 65534, 65534)
    with pytest.raises(PacklabError, match=r"owned by uid 65534"):
        private_directory(str(tmp_path / "link" / "slurm"), "dir")
    assert os.listdir(attacker) == []


def test_private_directory_follows_a_link_of_ours_in_a_private_parent(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "mine").symlink_to("real")  # relative, ours, in a directory only we can write
    os.chmod(tmp_path, 0o700)
    d = private_directory(str(tmp_path / "mine" / "a" / "b"), "dir")
    assert d == str(tmp_path / "mine" / "a" / "b")
    assert stat.S_IMODE(os.stat(real / "a" / "b").st_mode) == 0o700
