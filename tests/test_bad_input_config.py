"""Bad input in the dask config, the environment, profiles, the command line, the widget
and the argument checks: each is refused with a PacklabError (ConfigError for settings)
whose message names the field, the value given and, for settings, where it came from.

Config files and DASK_* variables are real: YAML files in a directory dask reads, and
environment variables dask re-reads (``dask.config.refresh``); both are put back after
each test. The command line runs in a real process where it reads a user's config.
"""

from __future__ import annotations

import math
import os
import pathlib
import subprocess
import sys
import warnings

import dask
import numpy as np
import pytest
from click.testing import CliRunner

import packlab
from packlab import checks, config
from packlab.cli import main
from packlab.config import UnknownSetting
from packlab.errors import ConfigError, PacklabError

NAN, INF = float("nan"), float("inf")


@pytest.fixture
def user_config(tmp_path, monkeypatch):
    """``apply(files=[yaml, ...], env={...})``: the user's dask config files (read in that
    order, so a later one wins) and DASK_* variables, as dask reads them at startup."""
    for name in list(os.environ):
        if name.startswith("DASK_PACKLAB"):
            monkeypatch.delenv(name)
    where = str(tmp_path / "dask")
    os.mkdir(where)
    dask.config.paths.append(where)

    def apply(files=(), env=None):
        paths = []
        for i, text in enumerate(files):
            p = os.path.join(where, f"{i}-packlab.yaml")
            pathlib.Path(p).write_text(text)
            paths.append(p)
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        dask.config.refresh()
        return paths

    yield apply
    monkeypatch.undo()
    dask.config.paths.remove(where)
    dask.config.refresh()


def assert_names(err, *parts):
    for part in parts:
        assert part in str(err), f"{part!r} not in: {err}"


# -- every key of packlab-schema.yaml with a wrong kind of value (dask.config.set) ---------
WRONG = [
    ("backend", 3), ("backend", ["local"]), ("profile", None), ("profile", ""),
    ("security", "off"), ("security", 1), ("security", "no"),
    ("adaptive.cooldown", "-5s"), ("adaptive.cooldown", NAN), ("dashboard.address", 8787),
    ("dashboard.address", ""), ("dashboard", "open"),
    ("adaptive.maximum", "8"), ("adaptive.maximum", True),
    ("local.reserve-memory", "lots"), ("local.reserve-memory", 1.5), ("local.reserve-memory", -0.1),
    ("local.reserve-memory", INF),
    ("slurm.spot-partition", None), ("slurm.spot-partition", ["spot"]), ("slurm.lifetime-margin", 2),
    ("slurm.lifetime-margin", "10%"), ("queue.store", ""), ("queue.store", "/scratch/\0x"),
    ("queue.policy", 3), ("queue.store", 0), ("queue.in-flight-factor", 0), ("queue.aging", "soon"),
    ("queue.fair-share-half-life", 0), ("queue.result-max-bytes", "lots"), ("queue.result-max-bytes", 0),
    ("queue.lease-timeout", "0s"), ("queue.lease-timeout", -30), ("queue.synchronous", "off"),
    ("queue.place-tiny-jobs", "yes"), ("queue.place-tiny-jobs", 1),
    ("queue.retry.attempts", "five"), ("queue.retry.attempts", 0), ("queue.retry.backoff", "expo"),
    ("queue.retry.base", "1 sec"), ("queue.retry.cap", INF), ("queue.retry.jitter", "yes"),
    ("queue.retry-budget.ratio", NAN), ("queue.retry-budget.ratio", -0.1), ("queue.retry-budget.window", 0),
    ("queue.retry-budget.minimum", -1), ("queue.breaker.threshold", 0),
    ("queue.breaker.cooldown", "a while"),
    ("profiles", ["a"]), ("profiles", "big"), ("queue", 5), ("queue.retry", "fast"),
    ("profile", "analytic"), ("profile", "nope"),
    ("pricing.core-hour", -1), ("pricing.gb-hour", "cheap"), ("pricing.gpu-hour", NAN),
    ("pricing.su-price", True), ("pricing.spot-discount", 1.0), ("pricing.reserved-discount", -0.2),
    ("pricing.currency", "usd"), ("pricing.currency", 840), ("pricing.currency", "EURO"), ("pricing", 5),
    ("telemetry.history.per-second", "-1h"), ("telemetry.history.per-minute", "a week"),
    ("telemetry.alerts.window", 0), ("telemetry.alerts.cooldown", "-5m"),
    ("telemetry.alerts.utilisation-low", 50), ("telemetry.alerts.utilisation-high", "90%"),
    ("telemetry.alerts.duration-sla", "0s"), ("telemetry.alerts.failure-rate", 1.0),
    ("telemetry.alerts.cost-trend", 0), ("telemetry.advisor.idle-after", 0),
    ("telemetry.advisor.retry-rate", -1), ("telemetry.advisor.fast-retry", "quick"),
    ("telemetry.advisor.memory-low", 2), ("telemetry.advisor.memory-high", NAN),
    ("telemetry.advisor.giant-share", "half"), ("telemetry.advisor.too-small", -10),
    ("telemetry.advisor.cpu-efficiency", 1.5), ("telemetry.advisor.gpu-utilisation", -0.1),
    ("telemetry.advisor.pending-after", INF), ("telemetry.advisor.deep-queue", 0),
    ("telemetry.advisor.headroom", -0.2), ("telemetry.enabled", "yes"), ("telemetry.interval", "0s"),
    ("telemetry.flush-interval", -1), ("telemetry.store", 3), ("telemetry", "on"), ("telemetry.alerts", []),
    ("panel.interval", "0s"), ("panel.history", "forever"), ("panel.report-points", 5), ("panel", "on"),
]


@pytest.mark.parametrize("key, value", WRONG, ids=[f"{k}={v!r}" for k, v in WRONG])
def test_a_wrong_value_set_in_code_names_key_value_and_origin(key, value):
    with dask.config.set({f"packlab.{key}": value}):
        with pytest.raises(ConfigError) as err:
            config.validate()
    assert_names(err.value, f"packlab.{key}={value!r} is invalid", "expected", "dask.config.set")
    assert err.value.field == f"packlab.{key}"


def _leaves(node, path=()):
    if "properties" not in node:
        return [".".join(path)]
    return [leaf for k, sub in node["properties"].items() for leaf in _leaves(sub, (*path, k))]


def test_every_schema_key_has_a_wrong_value_case():
    assert set(_leaves(config.schema())) <= {k for k, _ in WRONG}


UNKNOWN = [("queue.polcy", "policy"), ("adaptive.cooldwon", "cooldown"), ("backnd", "backend"),
           ("queue.retry.atempts", "attempts"), ("local.reserve", "reserve-memory")]


@pytest.mark.parametrize("key, meant", UNKNOWN)
def test_an_unknown_key_suggests_the_one_meant(key, meant):
    with dask.config.set({f"packlab.{key}": 1}):
        with pytest.raises(ConfigError) as err:
            config.validate()
    assert_names(err.value, f"packlab.{key}=1", "is not a packlab setting", f"Did you mean {meant!r}?")


def test_config_get_of_an_unknown_key_is_a_key_error_naming_it():
    with pytest.raises(UnknownSetting) as err:
        config.get("queue.polcy")
    assert isinstance(err.value, KeyError) and isinstance(err.value, PacklabError)
    assert_names(err.value, "packlab.queue.polcy is not a packlab setting")
    assert config.get("queue.polcy", "fifo") == "fifo"
    assert config.get("queue.retry.attempts") == 5


# -- DASK_* environment variables --------------------------------------------------------
ENV = [
    ("DASK_PACKLAB__SECURITY", "off", "packlab.security='off'"),
    ("DASK_PACKLAB__SECURITY", "no", "packlab.security='no'"),
    ("DASK_PACKLAB__LOCAL__RESERVE_MEMORY", "lots", "packlab.local.reserve-memory='lots'"),
    ("DASK_PACKLAB__LOCAL__RESERVE_MEMORY", "nan", "packlab.local.reserve-memory='nan'"),
    ("DASK_PACKLAB__QUEUE__RETRY__ATTEMPTS", "five", "packlab.queue.retry.attempts='five'"),
    ("DASK_PACKLAB__ADAPTIVE__COOLDOWN", "-5", "packlab.adaptive.cooldown=-5"),
    ("DASK_PACKLAB__QUEUE__LEASE_TIMEOUT", "0", "packlab.queue.lease-timeout=0"),
    ("DASK_PACKLAB__QUEUE__RETRY", "{'attempts': 'x'}", "packlab.queue.retry.attempts='x'"),
    ("DASK_PACKLAB__QUEUE__POLCY", "fifo", "Did you mean 'policy'?"),
    ("DASK_PACKLAB__QUEUE__RETRY__JITTER", "no", "packlab.queue.retry.jitter='no'"),
    ("DASK_PACKLAB__PROFILES", "['a']", "packlab.profiles=['a']"),
    ("DASK_PACKLAB__BACKEND", "[1]", "packlab.backend=[1]"),
    ("DASK_PACKLAB__PROFILE", "ml_trainin", "Did you mean 'ml-training'?"),
]


@pytest.mark.parametrize("name, raw, says", ENV, ids=[f"{n}={r}" for n, r, _ in ENV])
def test_a_wrong_environment_variable_is_named(user_config, name, raw, says):
    user_config(env={name: raw})
    with pytest.raises(ConfigError) as err:
        config.validate()
    assert_names(err.value, says, f"environment variable {name}")


# -- config files ------------------------------------------------------------------------
FILES = [
    ("packlab:\n  local:\n    reserve-memory: lots\n", "packlab.local.reserve-memory='lots'"),
    ("packlab:\n  queue:\n    retry:\n      attempts: five\n", "packlab.queue.retry.attempts='five'"),
    ("packlab:\n  adaptive:\n    cooldown: -5s\n", "packlab.adaptive.cooldown='-5s'"),
    ("packlab:\n  adaptive:\n    interval: 1s\n", "set distributed.adaptive.interval instead"),
    ("packlab:\n  slurm:\n    partition: batch\n", "set jobqueue.slurm.queue"),
    ("packlab:\n  queue:\n    polcy: fifo\n", "Did you mean 'policy'?"),
    ("packlab: [1, 2]\n", "packlab=[1, 2]"),
    ("packlab:\n  security: 'off'\n", "packlab.security='off'"),
    ("packlab:\n  queue:\n    result-max-bytes: 0\n", "packlab.queue.result-max-bytes=0"),
    ("packlab:\n  local:\n    reserve_memory: 2\n", "packlab.local.reserve-memory=2"),
]


@pytest.mark.parametrize("text, says", FILES, ids=[s for _, s in FILES])
def test_a_wrong_value_in_a_file_names_the_file(user_config, text, says):
    (path,) = user_config(files=[text])
    with pytest.raises(ConfigError) as err:
        config.validate()
    assert_names(err.value, says, f"file {path}")
    assert pathlib.Path(path).read_text() == text  # the user's file is never touched


def test_the_origin_follows_dask_priority(user_config):
    good, bad = "packlab:\n  adaptive:\n    maximum: 4\n", "packlab:\n  adaptive:\n    maximum: -4\n"
    _, second = user_config(files=[good, bad])
    with pytest.raises(ConfigError) as err:
        config.validate()
    assert f"file {second}" in str(err.value)
    user_config(files=[bad, good])  # the later file wins: nothing wrong
    config.validate()
    user_config(files=[bad, bad], env={"DASK_PACKLAB__ADAPTIVE__MAXIMUM": "x"})
    with pytest.raises(ConfigError) as err:
        config.validate()
    assert "environment variable DASK_PACKLAB__ADAPTIVE__MAXIMUM" in str(err.value)


def test_a_file_overridden_in_code_is_not_blamed(user_config):
    user_config(files=["packlab:\n  adaptive:\n    maximum: 4\n"])
    with dask.config.set({"packlab.adaptive.maximum": "x"}), pytest.raises(ConfigError) as err:
        config.validate()
    assert "dask.config.set" in str(err.value) and "packlab.yaml" not in str(err.value)


# -- profiles ----------------------------------------------------------------------------
PROFILE_CASES = [
    ({"cores": 0, "memory": "1GiB"}, "packlab.profiles.mine.cores=0"),
    ({"cores": "2", "memory": "1GiB"}, "packlab.profiles.mine.cores='2'"),
    ({"cores": 2.5, "memory": "1GiB"}, "packlab.profiles.mine.cores=2.5"),
    ({"cores": True, "memory": "1GiB"}, "packlab.profiles.mine.cores=True"),
    ({"cores": 1, "memory": "lots"}, "packlab.profiles.mine.memory='lots'"),
    ({"cores": 1, "memory": 0}, "packlab.profiles.mine.memory=0"),
    ({"cores": 1, "memory": ""}, "packlab.profiles.mine.memory=''"),
    ({"cores": 1, "memory": "GB"}, "packlab.profiles.mine.memory='GB'"),
    ({"cores": 1, "memory": "1GiB", "walltime": "1:99:00"}, "packlab.profiles.mine.walltime='1:99:00'"),
    ({"cores": 1, "memory": "1GiB", "walltime": 0}, "packlab.profiles.mine.walltime=0"),
    ({"cores": 1, "memory": "1GiB", "walltime": "0.5"}, "packlab.profiles.mine.walltime='0.5'"),
    ({"cores": 1, "memory": "1GiB", "gpus": -1}, "packlab.profiles.mine.gpus=-1"),
    ({"cores": 1, "memory": "1GiB", "gpus": True}, "packlab.profiles.mine.gpus=True"),
    ({"cores": 1, "memory": "1GiB", "gpu": 1}, "Did you mean 'gpus'?"),
    ({"cores": 1}, "has no memory"),
    ("big", "packlab.profiles.mine='big'"),
    ({"cores": 1, "memory": "1GiB", "description": 3}, "packlab.profiles.mine.description=3"),
]


@pytest.mark.parametrize("spec, says", PROFILE_CASES, ids=[s for _, s in PROFILE_CASES])
def test_a_bad_profile_entry_names_field_value_and_origin(spec, says):
    with dask.config.set({"packlab.profiles.mine": spec}):
        with pytest.raises(ConfigError) as err:
            packlab.PROFILES["mine"]
        assert_names(err.value, says, "dask.config.set")
        with pytest.raises(ConfigError):  # the entry point users call refuses it the same way
            packlab.launch(profile="mine", workers=0)
        assert packlab.PROFILES["analytics"].cores == 4  # the others still work


def test_a_bad_profile_in_a_file_or_variable_names_it(user_config):
    (path,) = user_config(files=["packlab:\n  profiles:\n    mine: {cores: 0, memory: 1GiB}\n"])
    with pytest.raises(ConfigError) as err:
        packlab.PROFILES["mine"]
    assert_names(err.value, "packlab.profiles.mine.cores=0", f"file {path}")
    user_config(env={"DASK_PACKLAB__PROFILES__GENERAL_BATCH__MEMORY": "lots"})
    with pytest.raises(ConfigError) as err:
        packlab.PROFILES["general-batch"]  # dask stores it as general_batch: still this name
    assert_names(err.value, "general-batch.memory='lots'",
                 "environment variable DASK_PACKLAB__PROFILES__GENERAL_BATCH__MEMORY")


def test_a_profile_name_that_is_not_a_string_is_named():
    mine = {"cores": 1, "memory": "1GiB"}
    with dask.config.set({"packlab.profiles": {"general-batch": mine, 1: mine}}):
        with pytest.raises(ConfigError, match=r"packlab\.profiles\.1 is invalid: a profile name must be"):
            list(packlab.PROFILES.values())


def test_an_unknown_profile_suggests_one():
    for name in (["a"], None, 3):
        with pytest.raises(PacklabError, match="is unknown"):
            packlab.PROFILES[name]
    with pytest.raises(PacklabError) as err:
        packlab.PROFILES["analytic"]
    assert_names(err.value, "profile='analytic' is unknown", "Did you mean 'analytics'?")
    assert err.value.field == "profile"


# -- the entry points users call ----------------------------------------------------------
BROKEN = [{"packlab.security": "off"}, {"packlab.queue.retry.attempts": "five"},
          {"packlab.local.reserve-memory": "lots"}]


@pytest.mark.parametrize("setting", BROKEN, ids=lambda s: next(iter(s)))
def test_launch_and_job_queue_refuse_a_broken_config_before_starting(setting, tmp_path):
    store = tmp_path / "q.db"
    with dask.config.set(setting):
        with pytest.raises(ConfigError, match="is invalid"):
            packlab.launch(workers=0)
        with pytest.raises(ConfigError, match="is invalid"):
            packlab.JobQueue(None, store=str(store))
    assert not store.exists()  # a refused queue leaves no store behind


def _cli(args, *, files=(), env=None, tmp_path):
    where = tmp_path / "dask"
    where.mkdir(exist_ok=True)
    for i, text in enumerate(files):
        (where / f"{i}-packlab.yaml").write_text(text)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_PACKLAB")}
    run_env.update(DASK_CONFIG=str(where), **(env or {}))
    return subprocess.run([sys.executable, "-m", "packlab.cli", *args], capture_output=True, text=True,
                          env=run_env, timeout=120)


CLI_CONFIG = [
    (["profiles"], ["packlab:\n  queue:\n    retry:\n      attempts: five\n"], None,
     ["packlab.queue.retry.attempts='five'", "0-packlab.yaml"]),
    (["profiles"], ["packlab:\n  profiles:\n    mine: {cores: 2, memory: lots}\n"], None,
     ["packlab.profiles.mine.memory='lots'", "0-packlab.yaml"]),
    (["demo", "--workers", "1"], [], {"DASK_PACKLAB__SECURITY": "off"},
     ["packlab.security='off'", "environment variable DASK_PACKLAB__SECURITY"]),
    (["profiles"], ["packlab:\n  profiles:\n    1: {cores: 2, memory: 1GiB}\n"], None,
     ["a key that is not a string", "{where}"]),  # dask itself fails on it when imported
    (["profiles"], ["packlab: {oops\n"], None, ["0-packlab.yaml", "is malformed"]),
    (["demo"], ["packlab: {oops\n"], None, ["0-packlab.yaml", "is malformed"]),
    (["queue", "ls"], [], {"DASK_PACKLAB__QUEUE__STORE": "0"}, ["packlab.queue.store=0"]),
]


@pytest.mark.parametrize("args, files, env, says", CLI_CONFIG, ids=lambda v: str(v)[:40])
def test_the_command_line_reports_a_bad_config_in_one_line(tmp_path, args, files, env, says):
    r = _cli(args, files=files, env=env, tmp_path=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    for i, text in enumerate(files):  # nothing rewritten
        assert (tmp_path / "dask" / f"{i}-packlab.yaml").read_text() == text
    assert_names(lines[0], *[s.format(where=tmp_path / "dask") for s in says])


def test_the_widget_takes_a_profile_name_spelt_as_dask_keys_are():
    from packlab.ui import ClusterLauncher

    assert ClusterLauncher(profile="general_batch", refresh_interval=None).profile.value == "general-batch"


def test_the_widget_shows_a_broken_config_instead_of_raising():
    from packlab.ui import ClusterLauncher

    with dask.config.set({"packlab.security": "off"}), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ui = ClusterLauncher(refresh_interval=None)
        ui.launch()
    assert "packlab.security=&#x27;off&#x27;" in ui.error.value or "packlab.security='off'" in ui.error.value
    assert ui.cluster is None and seen


# -- the command line's generic checks (CliRunner: nothing starts) -------------------------
OPTIONS = [
    (["demo", "--workers", "0"], "--workers=0"), (["demo", "--workers", "-3"], "--workers=-3"),
    (["demo", "--workers", "x"], "'--workers'"), (["demo", "--size", "lots"], "--size='lots'"),
    (["demo", "--size", ""], "'--size'"), (["demo", "--size", "GB"], "--size='GB'"),
    (["demo", "--size", "0"], "--size='0'"), (["demo", "--size", "1e400GB"], "--size='1e400GB'"),
    (["demo", "--profile", ""], "'--profile'"), (["demo", "--profile", "nope"], "--profile='nope'"),
    (["cluster", "up", "--workers", "-1"], "--workers=-1"),
    (["cluster", "up", "--min-workers", "x"], "'--min-workers'"),
    (["cluster", "up", "--min-workers", "-1"], "--min-workers=-1"),
    (["cluster", "up", "--max-workers", "0"], "--max-workers=0"),
    (["cluster", "up", "--min-workers", "3", "--max-workers", "1"], "--min-workers=3 is greater than --max"),
    (["cluster", "up", "--cooldown", "forever"], "--cooldown='forever'"),
    (["cluster", "up", "--cooldown", "-5s"], "--cooldown='-5s'"),
    (["cluster", "up", "--cooldown", ""], "'--cooldown'"),
    (["cluster", "up", "--gpus", "-1"], "--gpus=-1"),
    (["cluster", "up", "--walltime", "0.5"], "--walltime='0.5'"),
    (["cluster", "up", "--walltime", "soon"], "--walltime='soon'"),
    (["cluster", "up", "--walltime", "1:99:00"], "--walltime='1:99:00'"),
    (["cluster", "up", "--backend", ""], "'--backend'"),
    (["cluster", "up", "--profile", ""], "'--profile'"),
    (["cluster", "up", "--partition", ""], "'--partition'"),
    (["cluster", "up", "--account", " "], "'--account'"),
]


@pytest.mark.parametrize("args, says", OPTIONS, ids=[" ".join(a) for a, _ in OPTIONS])
def test_a_bad_option_is_named_as_typed(args, says):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert isinstance(r.exception, SystemExit)  # no traceback
    assert says in r.output and "Traceback" not in r.output


# -- the widget's constructor --------------------------------------------------------------
WIDGET = [
    ({"backend": 3}, "backend=3"), ({"backend": "nope"}, "backend=&#x27;nope&#x27;"),
    ({"backend": ""}, "backend=&#x27;&#x27;"), ({"profile": ["a"]}, "profile=[&#x27;a&#x27;]"),
    ({"profile": "nope"}, "profile=&#x27;nope&#x27;"), ({"profile": ""}, "profile=&#x27;&#x27;"),
    ({"min_workers": "2"}, "min_workers=&#x27;2&#x27;"), ({"min_workers": -1}, "min_workers=-1"),
    ({"min_workers": True}, "min_workers=True"), ({"max_workers": 0}, "max_workers=0"),
    ({"max_workers": 2.5}, "max_workers=2.5"),
    ({"min_workers": 3, "max_workers": 1}, "min_workers=3 is greater"),
    ({"refresh_interval": "fast"}, "refresh_interval=&#x27;fast&#x27;"),
    ({"refresh_interval": 0}, "refresh_interval=0"), ({"refresh_interval": NAN}, "refresh_interval=nan"),
    ({"refresh_interval": True}, "refresh_interval=True"), ({"cost_source": 5}, "cost_source=5"),
    ({"backend": "slrum"}, "Did you mean &#x27;slurm&#x27;?"),
    # launch keywords are checked as launch() checks them, when the form opens (review 7, 16)
    ({"workers": 2}, "workers=2 is a field of the form: pass min_workers= and max_workers="),
    ({"bogus": 1}, "bogus=1 is not a keyword of launch()"),
    ({"security": "off"}, "security=&#x27;off&#x27; is invalid: expected True, False"),
    ({"cores": 0}, "cores=0 is invalid: expected a whole number of at least 1"),
    ({"preload": 3}, "preload=3 is invalid: expected a list of strings"),
]


@pytest.mark.parametrize("kwargs, says", WIDGET, ids=[s for _, s in WIDGET])
def test_the_widget_shows_a_bad_argument_and_opens_with_defaults(kwargs, says):
    from packlab.ui import ClusterLauncher

    with pytest.warns(packlab.PacklabWarning):
        ui = ClusterLauncher(**kwargs)
    shown = ui.error.value.replace("'", "&#x27;")
    assert says in shown
    assert (ui.backend.value, ui.min_workers.value, ui.max_workers.value) == ("local", 1, 1)
    assert ui.profile.value == "general-batch"


# -- the checks themselves ------------------------------------------------------------------
REFUSED = [
    (checks.integer, True, {}), (checks.integer, 3.0, {}), (checks.integer, "3", {}),
    (checks.integer, np.bool_(True), {}), (checks.integer, -1, {"minimum": 0}),
    (checks.integer, None, {}), (checks.number, True, {}), (checks.number, NAN, {}),
    (checks.number, INF, {}), (checks.number, -INF, {}), (checks.number, "1.5", {}),
    (checks.number, 10**400, {}), (checks.number, None, {}), (checks.number, 0, {"above": 0}),
    (checks.boolean, "no", {}), (checks.boolean, "false", {}), (checks.boolean, 0, {}),
    (checks.boolean, 1, {}), (checks.boolean, None, {}), (checks.text, ["ann"], {}),
    (checks.text, "", {}), (checks.text, 3, {}), (checks.text, None, {}), (checks.text, "a\0b", {}),
    (checks.choice, "FIFO", {"choices": ["fifo", "priority"]}),
    (checks.choice, "priorty", {"choices": ["fifo", "priority"]}),
    (checks.choice, 3, {"choices": ["fifo"]}), (checks.choice, ["fifo"], {"choices": ["fifo"]}),
    (checks.path, 0, {}), (checks.path, "", {}), (checks.path, None, {}), (checks.path, b"/tmp", {}),
    (checks.path, "a\0b", {}), (checks.path, ["/tmp"], {}),
    (checks.duration, "-5s", {}), (checks.duration, NAN, {}), (checks.duration, "1e400s", {}),
    (checks.duration, True, {}), (checks.duration, [5], {}), (checks.duration, "", {}),
    (checks.duration, "s", {}), (checks.duration, 0, {"allow_zero": False}), (checks.duration, INF, {}),
    (checks.memory, "lots", {}), (checks.memory, "", {}), (checks.memory, "GB", {}),
    (checks.memory, True, {}), (checks.memory, 1.5, {}), (checks.memory, -1, {}),
    (checks.memory, 2**64, {}), (checks.memory, "1.5B", {}), (checks.walltime, "1:99:00", {}),
    (checks.walltime, "0.5", {}), (checks.walltime, 0, {}),
    (checks.walltime, "\u0661:\u0660\u0660:\u0660\u0660", {}),  # Arabic-Indic digits
]


@pytest.mark.parametrize("check, value, kwargs", REFUSED,
                         ids=[f"{c.__name__}({v!r})"[:40] for c, v, _ in REFUSED])
def test_a_check_refuses_naming_field_value_and_expectation(check, value, kwargs):
    with pytest.raises(PacklabError) as err:
        check(value, "thing", **kwargs)
    assert_names(err.value, f"thing={value!r} is invalid: expected ")
    assert err.value.field == "thing" and (err.value.value is value or err.value.value == value
                                           or value != value)


def test_mapping_of_names_the_key():
    with pytest.raises(PacklabError, match=r"limits\['a'\]='x' is invalid"):
        checks.mapping_of({"a": "x"}, "limits", checks.integer)
    with pytest.raises(PacklabError, match="limits key=1 is invalid"):
        checks.mapping_of({1: 2}, "limits", checks.integer)
    with pytest.raises(PacklabError, match=r"limits=\[1\] is invalid"):
        checks.mapping_of([1], "limits", checks.integer)


ACCEPTED = [
    (checks.integer, np.int64(3), 3), (checks.integer, np.uint8(3), 3), (checks.integer, 2**70, 2**70),
    (checks.number, np.float32(1.5), 1.5), (checks.number, np.int64(2), 2.0),
    (checks.boolean, np.bool_(False), False), (checks.duration, "1h30m", 5400.0),
    (checks.duration, "5 minutes", 300.0), (checks.duration, np.int64(3), 3.0),
    (checks.memory, np.int64(1024), 1024), (checks.memory, "1.5KiB", 1536),
    (checks.walltime, "1-00:00:00", 86400), (checks.path, pathlib.Path("/tmp/x"), "/tmp/x"),
]


@pytest.mark.parametrize("check, value, want", ACCEPTED, ids=[f"{c.__name__}({v!r})" for c, v, _ in ACCEPTED])
def test_numpy_scalars_and_well_formed_values_are_accepted(check, value, want):
    got = check(value, "thing")
    assert got == want and type(got) is type(want)


def test_path_expands_the_home_directory():
    assert checks.path("~/x", "store") == os.path.join(os.path.expanduser("~"), "x")
    assert not math.isnan(checks.number(0.0, "x"))


# -- review 7: config.get below a leaf, the backend setting, origins, profile memory ----------
def test_config_get_below_a_leaf_is_an_unknown_setting_not_a_type_error():
    with pytest.raises(config.UnknownSetting) as err:
        config.get("backend.x")
    assert isinstance(err.value, KeyError) and isinstance(err.value, ConfigError)
    assert_names(err.value, "packlab.backend.x is not a packlab setting", "packlab/packlab.yaml")


def test_an_unknown_backend_setting_is_refused_when_read(user_config):
    user_config(env={"DASK_PACKLAB__BACKEND": "sulrm"})
    with pytest.raises(ConfigError) as err:
        config.get("profile")  # any read: the whole section is checked
    assert_names(err.value, "packlab.backend='sulrm'", "Did you mean 'slurm'?",
                 "environment variable DASK_PACKLAB__BACKEND")


def test_a_variable_setting_one_field_of_a_new_profile_is_named(user_config):
    user_config(env={"DASK_PACKLAB__PROFILES__X__CORES": "two"})
    with pytest.raises(ConfigError) as err:
        packlab.PROFILES["x"]
    assert_names(err.value, "packlab.profiles.x", "'two'", "memory: 4GiB",
                 "environment variable DASK_PACKLAB__PROFILES__X__CORES")


def test_a_profile_too_small_for_a_worker_is_refused_where_profiles_are_read(user_config, tmp_path):
    (path,) = user_config(files=["packlab:\n  profiles:\n    tiny: {cores: 1, memory: 4}\n"])
    for read in (lambda: packlab.PROFILES["tiny"], lambda: packlab.launch(profile="tiny", workers=0)):
        with pytest.raises(ConfigError) as err:
            read()
        assert_names(err.value, "packlab.profiles.tiny.memory=4", "4 B per worker",
                     "less than the 256.00 MiB", "a bare number is bytes", f"(set by file {path})")
    r = _cli(["profiles"], files=["packlab:\n  profiles:\n    tiny: {cores: 1, memory: 4}\n"],
             tmp_path=tmp_path)
    assert r.returncode == 2 and "tiny: 4 B" not in r.stdout
    assert "packlab.profiles.tiny.memory=4" in r.stderr
