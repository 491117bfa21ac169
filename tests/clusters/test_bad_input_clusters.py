"""Bad input to the cluster API, the profiles and ``packlab cluster up``: one case each.

Every case asserts the exception type, and that the message names the field, the value
given and the fix. ``launch()`` cases also assert that nothing was started; CLI cases
that the option is named as typed, the exit code is 2 and there is no traceback.
"""

from __future__ import annotations

import math
import warnings

import dask
import pytest
from click.testing import CliRunner
from distributed.deploy.spec import SpecCluster

import packlab
from packlab.cli import main
from packlab.errors import ConfigError, PacklabError

SMALL = {"cores": 1, "memory": "1GiB"}


def running_clusters() -> int:
    return sum(1 for c in list(SpecCluster._instances) if c.status.name == "running")


def assert_names(message: str, field: str, value: str, fix: str) -> None:
    assert field in message, f"field {field!r} not named: {message}"
    assert value in message, f"value {value!r} not named: {message}"
    assert fix in message, f"fix {fix!r} not given: {message}"


# (id, launch kwargs, field, value as shown, the fix)
LAUNCH = [
    ("workers-str", {"workers": "2"}, "workers", "'2'", "Pass the number itself (2)"),
    ("workers-float", {"workers": 2.0}, "workers", "2.0", "Pass 2 (an int)"),
    ("workers-negative", {"workers": -1}, "workers", "-1", "expected a whole number, 0 or more"),
    ("workers-bool", {"workers": True}, "workers", "True", "expected a whole number"),
    ("cores-zero", {"cores": 0, "memory": "1GiB"}, "cores", "0", "at least 1"),
    ("cores-nan", {"cores": math.nan, "memory": "1GiB"}, "cores", "nan", "expected a whole number"),
    ("memory-4-bytes", {"cores": 1, "memory": 4}, "memory", "4", 'memory="4GiB" (a bare number is bytes)'),
    ("memory-str-no-unit", {"cores": 1, "memory": "4"}, "memory", "'4'", "a bare number is bytes"),
    ("memory-lots", {"cores": 1, "memory": "lots"}, "memory", "'lots'", '"4GiB"'),
    ("memory-inf", {"cores": 1, "memory": math.inf}, "memory", "inf", "expected"),
    ("memory-bool", {"cores": 1, "memory": True}, "memory", "True", '"4GiB"'),
    ("gpus-negative", {"gpus": -1, **SMALL}, "gpus", "-1", "0 or more"),
    ("gpus-str", {"gpus": "1", **SMALL}, "gpus", "'1'", "Pass the number itself"),
    ("walltime-99-minutes", {"walltime": "1:99:00", **SMALL}, "walltime", "'1:99:00'", "below 60"),
    ("walltime-list", {"walltime": [1], **SMALL}, "walltime", "[1]", "expected"),
    ("spot-no", {"spot": "no", **SMALL}, "spot", "'no'", "A string is always truthy"),
    ("spot-int", {"spot": 1, **SMALL}, "spot", "1", "True or False"),
    ("spot-on-local", {"spot": True, **SMALL}, "spot", "True", "needs backend='slurm'"),
    ("cooldown-negative", {"cooldown": "-5s", **SMALL}, "cooldown", "'-5s'", "a duration of 0 or more"),
    ("cooldown-soon", {"cooldown": "soon", **SMALL}, "cooldown", "'soon'", '"60s"'),
    ("cooldown-nan", {"cooldown": math.nan, **SMALL}, "cooldown", "nan", "expected"),
    ("bounds-reversed", {"min_workers": 3, "max_workers": 1, **SMALL}, "min_workers", "3",
     "set min_workers <= max_workers"),
    ("max-workers-zero", {"max_workers": 0, **SMALL}, "max_workers", "0", "at least 1"),
    ("min-workers-str", {"min_workers": "1", **SMALL}, "min_workers", "'1'", "Pass the number itself"),
    ("fixed-and-adaptive", {"workers": 2, "min_workers": 1, **SMALL}, "workers", "min_workers",
     "pass one or the other"),
    ("backend-list", {"backend": ["local"], **SMALL}, "backend", "['local']", "one of 'local', 'slurm'"),
    ("backend-typo", {"backend": "slrum", **SMALL}, "backend", "'slrum'", "Did you mean 'slurm'?"),
    ("profile-list", {"profile": ["analytics"], **SMALL}, "profile", "['analytics']", "choose one of"),
    ("profile-unknown", {"profile": "nope", **SMALL}, "profile", "'nope'", "general-batch"),
    ("security-off", {"security": "off", **SMALL}, "security", "'off'", "pass the bool False"),
    ("security-zero", {"security": 0, **SMALL}, "security", "0", "True, False or a distributed.Security"),
    ("dashboard-port-only", {"dashboard_address": 8787, **SMALL}, "dashboard_address", "8787",
     '"127.0.0.1:8787"'),
    ("dashboard-no-port", {"dashboard_address": "localhost", **SMALL}, "dashboard_address",
     "'localhost'", '"HOST:PORT"'),
    ("threads-per-worker", {"threads_per_worker": 2, **SMALL}, "threads_per_worker", "2", "pass cores="),
    ("n-workers", {"n_workers": 2, **SMALL}, "n_workers", "2", "pass workers="),
    ("memory-limit", {"memory_limit": "1GiB", **SMALL}, "memory_limit", "'1GiB'", "pass memory="),
    ("protocol", {"protocol": "tcp://", **SMALL}, "protocol", "'tcp://'", "pass security="),
    ("keyword-typo", {"n_wrokers": 2, **SMALL}, "n_wrokers", "2", "packlab sets that one: pass workers="),
    ("keyword-unknown", {"frobnicate": 1, **SMALL}, "frobnicate", "1", "remove it"),
    ("partition-list", {"partition": ["batch"], **SMALL}, "partition", "['batch']", 'partition="batch"'),
    ("account-number", {"account": 3, **SMALL}, "account", "3", 'account="batch"'),
    ("wait-no", {"wait": "no", "workers": 0, **SMALL}, "wait", "'no'", '"60s"'),
    ("wait-negative", {"wait": -1, "workers": 0, **SMALL}, "wait", "-1", "a positive duration"),
    # backend keywords: their values are checked before anything starts (review 7, 4-6)
    ("lifetime-soon-adaptive", {"min_workers": 0, "max_workers": 1, "lifetime": "soon", **SMALL},
     "lifetime", "'soon'", 'lifetime="1h"'),
    ("lifetime-soon-fixed", {"workers": 1, "lifetime": "soon", **SMALL}, "lifetime", "'soon'", '"1h"'),
    ("silence-logs-lots", {"workers": 0, "silence_logs": "lots", **SMALL}, "silence_logs", "'lots'",
     "silence_logs='ERROR'"),
    ("silence-logs-typo", {"workers": 0, "silence_logs": "WARNIG", **SMALL}, "silence_logs", "'WARNIG'",
     "Did you mean 'WARNING'?"),
    ("worker-class-nope", {"worker_class": "nope", **SMALL}, "worker_class", "'nope'", "cannot be imported"),
    ("worker-class-number", {"worker_class": 3, **SMALL}, "worker_class", "3", '"distributed.Nanny"'),
    ("preload-number", {"preload": 3, **SMALL}, "preload", "3", "one string is taken as one item"),
    ("preload-list-of-numbers", {"preload": [1], **SMALL}, "preload", "[1]", "a list of strings"),
    ("processes-no", {"processes": "no", **SMALL}, "processes", "'no'", "A string is always truthy"),
    ("scheduler-kwargs-list", {"scheduler_kwargs": [1], **SMALL}, "scheduler_kwargs", "[1]", "a dict"),
    ("worker-dashboard-bad", {"worker_dashboard_address": "everywhere", **SMALL},
     "worker_dashboard_address", "'everywhere'", '"HOST:PORT"'),
    ("nested-dashboard-bad", {"workers": 0, "scheduler_kwargs": {"dashboard_address": 8787}, **SMALL},
     "scheduler_kwargs['dashboard_address']", "8787", '"127.0.0.1:8787"'),
    ("nested-dashboard-and-argument", {"workers": 0, "dashboard_address": "127.0.0.1:0",
                                       "scheduler_kwargs": {"dashboard_address": "0.0.0.0:0"}, **SMALL},
     "scheduler_kwargs['dashboard_address']", "'0.0.0.0:0'", "pass only dashboard_address="),
    ("nthreads", {"nthreads": 2, **SMALL}, "nthreads", "2", "remove it; pass cores= to launch() instead"),
    ("dashboard-ipv6", {"dashboard_address": "::1", **SMALL}, "dashboard_address", "'::1'",
     '"localhost:0"'),
    ("dashboard-ipv6-brackets", {"dashboard_address": "[::1]:0", **SMALL}, "dashboard_address", "'[::1]:0'",
     "not an IPv6 address"),
    ("dashboard-two-addresses", {"dashboard_address": "127.0.0.1:0,:8787", **SMALL}, "dashboard_address",
     "'127.0.0.1:0,:8787'", '"HOST:PORT"'),
    # placement arguments the local backend has no use for are refused, not ignored (13)
    ("partition-on-local", {"partition": "gpu", **SMALL}, "partition", "'gpu'", "pass backend='slurm'"),
    ("account-on-local", {"account": "proj", **SMALL}, "account", "'proj'", "Remove account="),
    # too many workers: the count is the problem, not reserve-memory (11)
    ("workers-million", {"workers": 10**6, **SMALL}, "workers=1000000", "1000000", "Ask at most workers="),
    ("max-workers-million", {"min_workers": 0, "max_workers": 10**6, **SMALL}, "max_workers", "1000000",
     "Ask at most max_workers="),
]


@pytest.mark.parametrize("kwargs, field, value, fix", [c[1:] for c in LAUNCH], ids=[c[0] for c in LAUNCH])
def test_launch_refuses_bad_input_and_starts_nothing(kwargs, field, value, fix):
    before = running_clusters()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        with pytest.raises(PacklabError) as e:
            packlab.launch(**kwargs)
    assert_names(str(e.value), field, value, fix)
    assert running_clusters() == before


# (id, packlab settings, field, value, fix): bad settings reach launch() as clear errors.
SETTINGS = [
    ("reserve-memory-all", {"packlab.local.reserve-memory": 0.9999999}, "packlab.local.reserve-memory",
     "0.9999999", "set it to a fraction such as 0.1"),
    ("reserve-memory-text", {"packlab.local.reserve-memory": "lots"}, "packlab.local.reserve-memory",
     "'lots'", "expected a finite number"),
    ("dashboard-setting", {"packlab.dashboard.address": "everywhere"}, "packlab.dashboard.address",
     "'everywhere'", '"127.0.0.1:0"'),
    ("security-setting", {"packlab.security": "off"}, "packlab.security", "'off'", "True or False"),
    ("profile-memory-4", {"packlab.profiles.tiny": {"cores": 1, "memory": 4}},
     "packlab.profiles.tiny.memory", "4", "a bare number is bytes"),
    ("profile-cores-zero", {"packlab.profiles.tiny": {"cores": 0, "memory": "1GiB"}},
     "packlab.profiles.tiny.cores", "0", "at least 1"),
    ("profile-unknown-field", {"packlab.profiles.tiny": {"cores": 1, "memory": "1GiB", "cpus": 2}},
     "packlab.profiles.tiny", "cpus", "Allowed fields:"),
]


@pytest.mark.parametrize("settings, field, value, fix", [c[1:] for c in SETTINGS],
                         ids=[c[0] for c in SETTINGS])
def test_bad_settings_are_named_with_their_key(settings, field, value, fix):
    profile = "tiny" if any(k.startswith("packlab.profiles.") for k in settings) else None
    before = running_clusters()
    with dask.config.set(settings), pytest.raises(PacklabError) as e:
        packlab.launch(workers=1, profile=profile)
    assert_names(str(e.value), field, value, fix)
    if profile:
        assert isinstance(e.value, ConfigError)
    assert running_clusters() == before


# -- a running cluster's methods ----------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=0, **SMALL)
    yield pc
    pc.close()


METHODS = [
    ("scale-negative", "scale", (-1,), {}, "scale(n)", "-1", "pc.scale(0) stops every worker"),
    ("scale-float", "scale", (1.5,), {}, "scale(n)", "1.5", "e.g. pc.scale(2)"),
    ("scale-str", "scale", ("2",), {}, "scale(n)", "'2'", "e.g. pc.scale(2)"),
    ("adapt-min-negative", "adapt", (), {"minimum": -1, "maximum": 2}, "minimum", "-1", "0 or more"),
    ("adapt-reversed", "adapt", (), {"minimum": 2, "maximum": 1}, "minimum", "2", "set minimum <= maximum"),
    ("adapt-max-zero", "adapt", (), {"maximum": 0}, "maximum", "0", "at least 1"),
    ("adapt-cooldown", "adapt", (), {"maximum": 2, "cooldown": "soon"}, "cooldown", "'soon'", '"60s"'),
    ("adapt-min-str", "adapt", (), {"minimum": "0", "maximum": 2}, "minimum", "'0'", "Pass the number"),
    ("wait-zero", "wait_for_workers", (0,), {}, "wait_for_workers(n)", "0", "e.g. pc.wait_for_workers(2)"),
    ("wait-str", "wait_for_workers", ("1",), {}, "wait_for_workers(n)", "'1'", "pc.wait_for_workers(2)"),
    ("wait-timeout-soon", "wait_for_workers", (1,), {"timeout": "soon"}, "timeout", "'soon'", '"60s"'),
    ("wait-timeout-zero", "wait_for_workers", (1,), {"timeout": 0}, "timeout", "0", "a positive duration"),
]


@pytest.mark.parametrize("method, args, kwargs, field, value, fix", [c[1:] for c in METHODS],
                         ids=[c[0] for c in METHODS])
def test_cluster_methods_refuse_bad_input_and_change_nothing(cluster, method, args, kwargs, field,
                                                              value, fix):
    with pytest.raises(PacklabError) as e:
        getattr(cluster, method)(*args, **kwargs)
    assert_names(str(e.value), field, value, fix)
    assert cluster.adaptive is None and len(cluster.cluster.worker_spec) == 0


# -- packlab cluster up ---------------------------------------------------------------
CLI = [
    ("workers-negative", ["--workers", "-1"], "--workers", "-1", "0 or more"),
    ("workers-word", ["--workers", "many"], "--workers", "'many'", "is not a valid integer"),
    ("min-workers-negative", ["--min-workers", "-1"], "--min-workers", "-1", "0 or more"),
    ("max-workers-zero", ["--max-workers", "0"], "--max-workers", "0", "at least 1"),
    ("bounds-reversed", ["--min-workers", "3", "--max-workers", "1"], "--min-workers", "3", "<="),
    ("cooldown", ["--cooldown", "soon"], "--cooldown", "'soon'", '"60s"'),
    ("walltime", ["--walltime", "soon"], "--walltime", "'soon'", "expected"),
    ("gpus-negative", ["--gpus", "-1"], "--gpus", "-1", "0 or more"),
    ("spot-local", ["--spot"], "--spot", "True", "needs --backend='slurm'"),
    ("backend", ["--backend", "slrum"], "--backend", "'slrum'", "Did you mean 'slurm'?"),
    ("profile", ["--profile", "nope"], "--profile", "'nope'", "general-batch"),
    ("dashboard", ["--dashboard-address", "8787"], "--dashboard-address", "'8787'", '"127.0.0.1:8787"'),
    ("partition-empty", ["--partition", ""], "--partition", "''", "give a value"),
]


@pytest.mark.parametrize("args, option, value, fix", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_cluster_up_names_the_option_as_typed_and_exits_2(args, option, value, fix):
    r = CliRunner().invoke(main, ["cluster", "up", *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert_names(r.output.replace("\n", " "), option, value, fix)
