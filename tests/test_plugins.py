"""The plug-in registries (queue policies, reductions, checkpoint formats, advisor rules):
one error for an unknown name, every built-in listed, a name registered at run time found
and forgotten again."""

from __future__ import annotations

import re

import numpy as np
import pytest

import packlab
from packlab.errors import PacklabError
from packlab.kernels import REDUCTIONS, register_reduction
from packlab.kernels.moments import Sum
from packlab.pipeline import FORMATS, Format, register_format, unregister_format
from packlab.queue import FIFO, POLICIES, get_policy, register_policy
from packlab.telemetry.advisor import RULES, Finding, RunSummary, findings, rule

BUILTIN = {
    "policy": (POLICIES, "packlab.policies", {"fifo", "priority", "fair-share", "deadline"}),
    "reduction": (REDUCTIONS, "packlab.reductions",
                  {"sum", "count", "mean", "var", "std", "min", "max", "histogram", "custom"}),
    "checkpoint format": (FORMATS, "packlab.checkpoint_formats", {"zarr", "parquet", "pickle"}),
    "advisor rule": (RULES, "packlab.advisor_rules",
                     {"idle-cluster", "retry-storm", "memory-hog", "unmonitored-pipeline", "idle-gpus"}),
}


def _choices(registry) -> str:
    return re.escape(", ".join(map(repr, sorted(registry))))


@pytest.mark.parametrize("kind", sorted(BUILTIN))
def test_lists_every_built_in(kind):
    registry, group, names = BUILTIN[kind]
    assert registry.kind == kind and registry.group == group
    assert names <= set(registry) and all(n in registry for n in names)
    assert registry.names() == sorted(registry)
    for name in names:
        assert registry[name] is not None


@pytest.mark.parametrize("kind", sorted(BUILTIN))
def test_one_error_for_an_unknown_name(kind):
    registry, _, _ = BUILTIN[kind]
    unknown = rf"^what='nope-x' is unknown: choose one of {_choices(registry)}\."
    with pytest.raises(PacklabError, match=unknown) as e:
        registry.get("nope-x", "what")
    assert (e.value.field, e.value.value) == ("what", "nope-x")
    with pytest.raises(PacklabError, match=rf"^what=3 is invalid: expected the name of a {kind}: "
                                           rf"choose one of {_choices(registry)}\."):
        registry.get(3, "what")


def test_policy_lookup():
    msg = (rf"^policy='FIFO' is unknown: choose one of {_choices(POLICIES)}\. Did you mean 'fifo'\? "
           r"Or pass a Policy instance")
    with pytest.raises(PacklabError, match=msg):
        get_policy("FIFO")
    with pytest.raises(PacklabError, match=r"^policy=\['fifo'\] is invalid: expected the name of a policy"):
        get_policy(["fifo"])
    p = FIFO()
    assert get_policy(p) is p


def test_reduction_lookup():
    x = np.arange(3.0)
    msg = rf"^reduce='maen' is unknown: choose one of {_choices(REDUCTIONS)}\. Did you mean 'mean'\? Or"
    with pytest.raises(PacklabError, match=msg):
        packlab.mapreduce(lambda v: v, x, reduce="maen")


def test_a_policy_registered_at_run_time():
    @register_policy
    class Lifoish(FIFO):
        name = "test-plugins-lifo"

    try:
        assert POLICIES["test-plugins-lifo"] is Lifoish
        assert isinstance(get_policy("test-plugins-lifo"), Lifoish)
        with pytest.raises(PacklabError, match="'test-plugins-lifo'"):
            get_policy("nope")
    finally:
        POLICIES.unregister("test-plugins-lifo")
    assert "test-plugins-lifo" not in POLICIES
    with pytest.raises(PacklabError, match="is unknown"):
        get_policy("test-plugins-lifo")


def test_a_reduction_registered_at_run_time():
    @register_reduction
    class SumAbs(Sum):
        name = "test_plugins_sumabs"

        def update_local(self):
            return self.guarded(["l_s += abs(v)"])

    try:
        assert REDUCTIONS["test_plugins_sumabs"] is SumAbs
        assert "test_plugins_sumabs" in REDUCTIONS.names()
    finally:
        REDUCTIONS.unregister("test_plugins_sumabs")
    assert "test_plugins_sumabs" not in REDUCTIONS
    with pytest.raises(PacklabError, match="reduce='test_plugins_sumabs' is unknown"):
        packlab.mapreduce(lambda v: v, np.arange(3.0), reduce="test_plugins_sumabs")


def test_a_format_registered_at_run_time():
    from packlab.pipeline.formats import format_for, get_format

    class Text(Format):
        name = "test-plugins-text"

        def accepts(self, obj):
            return isinstance(obj, str)

    fmt = Text()
    register_format(fmt)
    try:
        assert FORMATS["test-plugins-text"] is fmt and get_format("test-plugins-text") is fmt
        assert format_for("hi") is fmt  # asked before the built-in ones
        assert format_for(1).name == "pickle"
    finally:
        unregister_format("test-plugins-text")
    assert "test-plugins-text" not in FORMATS and get_format("test-plugins-text") is None
    assert format_for("hi").name == "pickle"
    assert get_format(None) is None and get_format(["zarr"]) is None  # a foreign manifest


def test_an_advisor_rule_registered_at_run_time():
    def test_plugins_rule(s, th):
        return [Finding("test-plugins", "info", {}, "nothing to do", "registered at run time")]

    rule(test_plugins_rule)
    try:
        assert RULES["test-plugins-rule"] is test_plugins_rule
        assert "test-plugins" in [f.name for f in findings(RunSummary(wall_seconds=60))]
    finally:
        RULES.unregister("test-plugins-rule")
    assert "test-plugins-rule" not in RULES
    assert "test-plugins" not in [f.name for f in findings(RunSummary(wall_seconds=60))]
