"""Fuzzing the parsers users feed by hand: durations, memory sizes, walltimes, the checks
and the whole ``packlab`` config section.

Each either returns a value of the right type and range, or raises PacklabError: never
another exception, never a hang (pytest-timeout stops one). Well-formed inputs round-trip.
"""

from __future__ import annotations

import math
import string
from decimal import Decimal
from fractions import Fraction

import dask
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packlab import checks, config
from packlab.errors import ConfigError, PacklabError
from packlab.units import MAX_BYTES, MAX_SECONDS, format_walltime, memory_bytes, seconds, walltime_seconds

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text near the grammar (digits, units, separators) finds more edges than arbitrary text.
NEAR = st.text(alphabet="0123456789.:-+eE _smhdwuns" + "GMKTPiBb" + "\t\n\x00٣", max_size=24)
TEXT = st.one_of(st.text(max_size=30), NEAR)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.fractions(),
    st.integers(-(2**62), 2**62).map(np.int64),
    st.floats(width=32).map(np.float32),
    st.booleans(),
)
SCALARS = st.one_of(st.none(), TEXT, NUMBERS, st.binary(max_size=8), st.booleans().map(np.bool_))
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(string.ascii_lowercase + "-_", max_size=8), inner,
                                            max_size=3)),
    max_leaves=8,
)


def _outcome(fn, *args, **kwargs):
    """fn's value, or None when it raised PacklabError (any other exception fails the test)."""
    try:
        return fn(*args, **kwargs)
    except PacklabError as e:
        assert str(e), "an error must say something"
        return None


# -- the unit parsers ---------------------------------------------------------------
@FUZZ
@given(st.one_of(TEXT, NUMBERS, SCALARS), st.booleans())
def test_seconds_is_finite_bounded_or_refused(value, allow_zero):
    s = _outcome(seconds, value, "t", allow_zero=allow_zero)
    if s is not None:
        assert type(s) is float and math.isfinite(s)
        assert (0 <= s if allow_zero else 0 < s) and s <= MAX_SECONDS


@FUZZ
@given(st.one_of(TEXT, NUMBERS, SCALARS))
def test_memory_bytes_is_a_positive_bounded_int_or_refused(value):
    n = _outcome(memory_bytes, value, "m")
    if n is not None:
        assert type(n) is int and 1 <= n <= MAX_BYTES


@FUZZ
@given(st.one_of(TEXT, NUMBERS, SCALARS))
def test_walltime_is_whole_positive_seconds_or_refused(value):
    w = _outcome(walltime_seconds, value, "w")
    if w is not None:
        assert type(w) is int and 1 <= w <= MAX_SECONDS
        assert walltime_seconds(format_walltime(w)) == w


@FUZZ
@given(st.integers(0, MAX_SECONDS), st.sampled_from(["s", " s", "seconds", ""]))
def test_whole_seconds_round_trip(n, unit):
    assert seconds(f"{n}{unit}") == n


@FUZZ
@given(st.integers(0, 8 * 10**5), st.integers(0, 59), st.integers(0, 59), st.sampled_from(["", " "]))
def test_compound_durations_add_up(h, m, s, sep):
    assert seconds(f"{h}h{sep}{m}m{sep}{s}s") == h * 3600 + m * 60 + s


@FUZZ
@given(st.integers(1, 2**33 - 1), st.sampled_from([("GiB", 2**30), ("MiB", 2**20), ("kB", 1000), ("B", 1)]))
def test_memory_sizes_round_trip(n, unit):
    name, factor = unit
    assert memory_bytes(f"{n}{name}") == n * factor
    assert memory_bytes(n * factor) == n * factor


@FUZZ
@given(st.one_of(st.integers(1, MAX_SECONDS), st.floats(1, MAX_SECONDS)))
def test_walltime_format_round_trips(x):
    w = walltime_seconds(x)
    assert w == int(x)
    assert walltime_seconds(format_walltime(w)) == w


@FUZZ
@given(st.integers(0, 10**4), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
def test_slurm_walltimes_parse(d, h, m, s):
    total = d * 86400 + h * 3600 + m * 60 + s
    w = _outcome(walltime_seconds, f"{d}-{h:02d}:{m:02d}:{s:02d}")
    assert w == (total if total > 0 else None)


# -- the checks ----------------------------------------------------------------------
@FUZZ
@given(VALUES, st.one_of(st.none(), st.integers(-5, 5)))
def test_integer_returns_an_int_in_range_or_refuses(value, minimum):
    n = _outcome(checks.integer, value, "n", minimum=minimum)
    if n is not None:
        assert type(n) is int and not isinstance(value, (bool, np.bool_, float, str))
        assert minimum is None or n >= minimum


@FUZZ
@given(VALUES, st.one_of(st.none(), st.floats(-5, 5)))
def test_number_returns_a_finite_float_or_refuses(value, above):
    x = _outcome(checks.number, value, "x", above=above)
    if x is not None:
        assert type(x) is float and math.isfinite(x) and (above is None or x > above)


@FUZZ
@given(VALUES)
def test_boolean_text_path_choice_accept_only_their_kind(value):
    b = _outcome(checks.boolean, value, "b")
    assert b is None or (type(b) is bool and isinstance(value, (bool, np.bool_)))
    t = _outcome(checks.text, value, "t")
    assert t is None or (isinstance(t, str) and t.strip())
    p = _outcome(checks.path, value, "p")
    assert p is None or (isinstance(p, str) and p.strip() and "\0" not in p)
    c = _outcome(checks.choice, value, "c", ["fifo", "priority"])
    assert c in (None, "fifo", "priority")


@FUZZ
@given(VALUES)
def test_duration_memory_walltime_mapping_checks(value):
    d = _outcome(checks.duration, value, "d")
    assert d is None or (type(d) is float and 0 <= d <= MAX_SECONDS)
    m = _outcome(checks.memory, value, "m")
    assert m is None or (type(m) is int and m >= 1)
    w = _outcome(checks.walltime, value, "w")
    assert w is None or (type(w) is int and w >= 1)
    o = _outcome(checks.optional, checks.integer, value, "o", minimum=0)
    assert o is None or (type(o) is int and o >= 0)
    mp = _outcome(checks.mapping_of, value, "mp", checks.integer)
    assert mp is None or all(isinstance(k, str) and type(v) is int for k, v in mp.items())


@FUZZ
@given(st.one_of(st.decimals(), st.fractions(), st.integers().map(Fraction), st.just(Decimal("1e999999"))))
def test_exotic_numbers_are_numbers_or_refused(value):
    _outcome(checks.number, value, "x")
    _outcome(seconds, value, "t")
    _outcome(memory_bytes, value, "m")


# -- the config section ------------------------------------------------------------
def _leaves(node, path=()):
    props = node.get("properties")
    if props is None:
        yield ".".join(path)
        return
    for key, sub in props.items():
        yield from _leaves(sub, (*path, key))


def _sections(node, path=()):
    props = node.get("properties")
    if props is not None:
        yield ".".join(path)
        for key, sub in props.items():
            yield from _sections(sub, (*path, key))


LEAVES = sorted(_leaves(config.schema()))
KEYS = st.one_of(st.sampled_from(LEAVES), st.sampled_from([s for s in _sections(config.schema()) if s]),
                 st.text(string.ascii_lowercase + "-_", min_size=1, max_size=12))


@FUZZ
@given(KEYS, VALUES)
def test_config_validate_passes_or_raises_a_config_error(key, value):
    with dask.config.set({f"packlab.{key}": value}):
        try:
            config.validate()
        except ConfigError as e:
            assert e.field and e.field.startswith("packlab") and "(set by " in str(e)
            return
        except PacklabError as e:  # pragma: no cover - would be a bug
            raise AssertionError(f"validate raised {type(e).__name__}, not ConfigError: {e}") from e
        # accepted: a key the schema knows, and it reads back as set
        assert key in LEAVES or key in set(_sections(config.schema()))
        assert config.get(key) == value or (value != value)  # nan != nan


TOP = st.sampled_from([*sorted(config.schema()["properties"]), "extra"])


@FUZZ
@given(st.dictionaries(TOP, VALUES, max_size=4))
def test_whole_random_sections_never_crash_validation(section):
    with dask.config.set({"packlab": section}):
        try:
            config.validate()
        except ConfigError:
            pass


# -- profiles and the widget built from them ------------------------------------------
SPEC = st.one_of(VALUES, st.fixed_dictionaries(
    {"cores": VALUES, "memory": st.one_of(VALUES, NEAR)},
    optional={"gpus": VALUES, "walltime": st.one_of(VALUES, NEAR), "description": VALUES, "gpu": VALUES}))


@FUZZ
@given(SPEC)
def test_a_profile_entry_parses_or_is_a_config_error(spec):
    import packlab

    with dask.config.set({"packlab.profiles.fuzzed": spec}):
        try:
            p = packlab.PROFILES["fuzzed"]
        except ConfigError as e:
            assert "packlab.profiles.fuzzed" in str(e) and "(set by " in str(e)
            return
    assert p.cores >= 1 and p.memory >= 1 and p.gpus >= 0 and p.walltime >= 1
    assert isinstance(p.description, str) and p.summary()


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["backend", "profile", "min_workers", "max_workers",
                                        "refresh_interval", "cost_source"]), VALUES, max_size=3))
def test_the_widget_opens_whatever_its_arguments(kwargs):
    import warnings

    from packlab.ui import ClusterLauncher

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ui = ClusterLauncher(**kwargs)
    assert ui.cluster is None and ui.min_workers.value <= ui.max_workers.value
    assert ui.profile.value in ui.profile.options and ui.backend.value in ui.backend.options
