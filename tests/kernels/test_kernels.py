"""@packlab.kernel: compiled lazily per dtype, callable on NumPy, clear errors, pickles by identity."""

from __future__ import annotations

import math
import pickle
import re
import sys
import warnings

import cloudpickle
import numba
import numpy as np
import pytest
from support import TESTS

import packlab
from packlab.errors import PacklabError
from packlab.kernels import Reduction, register_reduction
from packlab.kernels.codegen import locals_to_state, state_per_row
from packlab.kernels.kernel import Kernel
from packlab.kernels.loops import UNROLL, collapse, loop_source
from packlab.kernels.reductions import REDUCTIONS, make_reduction


@packlab.kernel
def anomaly(t, clim):
    return (t - clim) ** 2


def test_kernel_is_callable_on_numpy_with_broadcasting():
    t = np.arange(6.0).reshape(2, 3)
    clim = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(anomaly(t, clim), (t - clim) ** 2)
    assert anomaly(3.0, 1.0) == 4.0


def test_compiles_once_per_dtype_signature():
    @packlab.kernel
    def f(x):
        return x * x

    assert f.result_dtype([np.float32]) == np.float32
    assert f.result_dtype([np.int64]) == np.int64
    assert len(f.cpu.overloads) == 2
    f.result_dtype([np.float32])
    f(np.zeros(3, np.float32))
    assert len(f.cpu.overloads) == 2


def test_kernel_of_a_kernel_is_itself_and_plain_functions_are_wrapped():
    assert packlab.kernel(anomaly) is anomaly
    assert isinstance(packlab.kernel(lambda x: x), Kernel)


def test_a_numba_function_is_compiled_from_its_python_function():
    double = numba.njit(lambda x: 2 * x)
    k = packlab.kernel(double)
    assert k.py_func is double.py_func and k.nargs == 1
    assert k(np.array([1.5])) == 3.0
    assert packlab.kernel(double) is k


@pytest.mark.parametrize("builtin, wrapped", [
    (math.sin, lambda x: math.sin(x)),
    (np.sin, lambda x: np.sin(x)),
    (np.hypot, lambda a, b: np.hypot(a, b)),
])
def test_the_advised_wrapping_lambda_works_where_the_builtin_is_refused(builtin, wrapped):
    """The error for a built-in or ufunc names the lambda that wraps it; that lambda compiles."""
    args = [np.array([0.5, 2.0])] * (builtin.nin if isinstance(builtin, np.ufunc) else 1)
    with pytest.raises(PacklabError, match="Wrap it: lambda") as e:
        packlab.kernel(builtin)
    assert e.value.field == "kernel" and e.value.value is builtin
    want = np.vectorize(builtin)(*args)
    np.testing.assert_allclose(packlab.kernel(wrapped)(*args), want)
    assert float(packlab.mapreduce(wrapped, *args).compute()) == pytest.approx(want.sum())


def test_wrapping_a_function_again_gives_the_same_kernel():
    def cube(x):
        return x * x * x

    k = packlab.kernel(cube)
    assert k(np.array([2.0])) == 8.0
    assert packlab.kernel(cube) is k and len(k.cpu.overloads) == 1
    assert packlab.kernel(lambda x: x) is not packlab.kernel(lambda x: x)  # distinct functions


def test_reductions_with_different_parameters_tokenize_differently():
    from dask.base import tokenize

    f8 = np.dtype("f8")
    same = [make_reduction("histogram", f8, False, {"bins": 4, "range": (0, 1)}) for _ in range(2)]
    assert tokenize(same[0]) == tokenize(same[1])
    for a, b in [({"bins": 4, "range": (0, 1)}, {"bins": 4, "range": (0, 2)}),
                 ({"bins": [0.0, 1.0, 2.0]}, {"bins": [0.0, 1.5, 2.0]})]:
        ha, hb = (make_reduction("histogram", f8, False, o) for o in (a, b))
        assert ha.key() == hb.key() and tokenize(ha) != tokenize(hb)  # one loop, two answers
    assert tokenize(make_reduction("var", f8, False, {})) != tokenize(
        make_reduction("var", f8, False, {"ddof": 1}))

    def add(a, b):
        return a + b

    assert tokenize(make_reduction(add, f8, False, {"identity": 0.0})) != tokenize(
        make_reduction(add, f8, False, {"identity": 1.0}))


def test_pickles_by_identity_in_process_and_by_value_across():
    assert pickle.loads(pickle.dumps(anomaly)) is anomaly
    # A fresh process has no registry entry: simulate by clearing it.
    mod = sys.modules["packlab.kernels.kernel"]

    blob = cloudpickle.dumps(anomaly)
    saved = mod._REGISTRY.pop(anomaly.uid)
    try:
        k = pickle.loads(blob)
        assert k is not anomaly and k.uid == anomaly.uid
        assert k(3.0, 1.0) == 4.0
        assert pickle.loads(blob) is k  # later unpickles reuse it and its compiled code
    finally:
        mod._REGISTRY[anomaly.uid] = saved


def test_compile_error_names_kernel_types_and_reason():
    @packlab.kernel
    def bad(x):
        return x.no_such_attribute

    with pytest.raises(PacklabError) as e:
        bad(np.zeros(3))
    msg = str(e.value)
    assert "'bad'" in msg and "float64" in msg and "no_such_attribute" in msg
    assert "\x1b[" not in msg and len(msg.splitlines()) == 1


def test_non_scalar_result_is_rejected():
    @packlab.kernel
    def pair(x):
        return (x, x)

    with pytest.raises(PacklabError, match=r"returns.*expected one real number"):
        pair.result_dtype([np.float64])


@pytest.mark.parametrize("bad", [
    lambda *xs: 0, lambda x, *, y: 0, lambda **kw: 0,
])
def test_variadic_signatures_are_rejected(bad):
    with pytest.raises(PacklabError, match="positional arguments only"):
        packlab.kernel(bad)


def test_not_callable_is_rejected():
    with pytest.raises(PacklabError, match="plain Python function"):
        packlab.kernel(3)


@pytest.mark.parametrize("dtype", ["U3", "datetime64[s]", "complex128", "O"])
def test_non_numeric_input_is_a_clear_error(dtype):
    name = re.escape(str(np.dtype(dtype)))
    with pytest.raises(PacklabError, match=f"dtype {name}, which is invalid: expected a real numeric"):
        anomaly(np.zeros(2, dtype), 1.0)


def test_wrong_number_of_arguments():
    with pytest.raises(PacklabError, match="takes 2 argument"):
        anomaly.result_dtype([np.float64])


def test_collapse_merges_contiguous_axes_and_keeps_broadcast_ones_apart():
    a = np.zeros((4, 3, 5))
    clim = np.broadcast_to(np.zeros((3, 5)), (4, 3, 5))
    shape, kept, views = collapse(a.shape, (False, False, False), [a])
    assert shape == (60,) and views[0].flags.c_contiguous
    shape, kept, views = collapse(a.shape, (False, True, True), [a, clim])
    assert shape == (4, 15) and kept == (False, True)
    assert views[1].strides == (0, 8)
    shape, kept, _ = collapse((1, 1), (True, False), [np.zeros((1, 1))])
    assert shape == (1,) and kept == (False,)


def test_loop_accumulates_inner_reduced_axes_in_locals():
    src = loop_source(1, (True, False), make_reduction("sum", np.dtype("f8"), False, {}))
    assert "l_s += v" in src and "s_s[o] += l_s" in src
    # inner axis kept: UNROLL rows fold in locals per state update, a plain pass does the rest
    src = loop_source(1, (False, True), make_reduction("sum", np.dtype("f8"), False, {}))
    assert f"for i0 in range(0, m, {UNROLL}):" in src and "for i0 in range(m, n0):" in src
    assert src.count("l_s += v") == UNROLL and src.count("s_s[o] += l_s") == 1
    assert src.count("s_s[o] += v") == 1  # the remainder rows


@packlab.kernel
def ident(x):
    return x


@pytest.mark.parametrize("red", ["sum", "mean", "var", "min", "max", "count"])
@pytest.mark.parametrize("rows", [0, 1, 3, 4, 5, 9])
def test_unrolled_rows_and_the_remainder_match_numpy(red, rows):
    from packlab.kernels.loops import chunk_state

    x = np.random.default_rng(rows).normal(size=(rows, 3, 7)) * 10 + 100
    x[rows // 2 :, 1, 2] = np.nan  # a NaN in the unrolled rows and/or the remainder
    r = make_reduction(red, np.dtype("f8"), True, {})
    if rows == 0 and r.empty_error:
        return
    got = r.finalize(r.to_partial(chunk_state(ident, r, [x], (False, True, True)))).reshape(3, 7)
    ref = {"sum": np.nansum, "mean": np.nanmean, "var": np.nanvar, "min": np.nanmin, "max": np.nanmax,
           "count": lambda a, axis: np.sum(~np.isnan(a), axis=axis)}[red]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells and empty means
        want = ref(x, axis=0)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


def test_registry_lists_the_documented_reductions():
    assert {"sum", "min", "max", "mean", "var", "std", "count", "histogram", "custom"} <= set(REDUCTIONS)


def test_fused_pass_allocates_no_temporary_of_the_chunk_size():
    import tracemalloc

    from packlab.kernels.loops import chunk_state

    t = np.random.default_rng(0).normal(size=(200, 50, 40))  # 3.2 MB
    clim = t.mean(axis=0)
    for red, kept in (("var", (False, True, True)), ("sum", (False, False, False))):
        r = make_reduction(red, np.dtype("f8"), True, {})
        chunk_state(anomaly, r, [t, clim], kept)  # compile outside the measurement
        tracemalloc.start()
        chunk_state(anomaly, r, [t, clim], kept)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < t.nbytes / 20, f"{red}: {peak} bytes allocated for a {t.nbytes}-byte chunk"


@pytest.mark.parametrize("red", ["var", "max", "histogram", "mean"])
def test_state_carries_across_chunks_like_one_pass(red):
    from packlab.kernels.loops import chunk_state

    x = 1e6 + np.random.default_rng(1).normal(size=(90, 7))
    x[:30, 2] = np.nan  # cell 2 has nothing in the first chunk (skipna)
    options = {"bins": 5, "range": (1e6 - 2, 1e6 + 2)} if red == "histogram" else {}
    r = make_reduction(red, np.dtype("f8"), True, options)
    state = None
    for part in np.split(x, [30, 31, 60]):
        state = chunk_state(anomaly, r, [part, np.array(1e6)], (False, True), state)
    whole = r.to_partial(chunk_state(anomaly, r, [x, np.array(1e6)], (False, True)))
    np.testing.assert_allclose(r.finalize(r.to_partial(state)).astype(float),
                               r.finalize(whole).astype(float), rtol=1e-9)


# -- register_reduction: loops generated from structure ---------------------------


@register_reduction
class SumAndSquares(Reduction):
    """sum(v**2) - sum(v): two state fields, one a prefix of the other (``s``, ``s2``)."""

    name = "test_s_s2"
    fields = ("s", "s2")
    additive = True

    def update_local(self):
        return self.guarded(["l_s += v", "l_s2 += v * v"])

    def result_dtype(self):
        return np.dtype("f8")

    def finalize(self, p):
        return p["s2"] - p["s"]


@register_reduction
class SumAndSquaresInState(SumAndSquares):
    """The same, straight into the state arrays (no locals) in every layout."""

    name = "test_s_s2_state"
    uses_locals = False


def test_snippets_are_rewritten_by_name_not_by_text():
    assert locals_to_state(["l_s += v", "l_s2 += l_s * v", "l_sx = 1"], ("s", "s2")) == [
        "s_s[o] += v", "s_s2[o] += s_s[o] * v", "l_sx = 1"]
    assert state_per_row(["s_c[o, b] += 1", "if v == v:", "    s_c2[o] += s_c[o, 0]"], ("c", "c2")) == [
        "s_c[row, o, b] += 1", "if v == v:", "    s_c2[row, o] += s_c[row, o, 0]"]


@pytest.mark.parametrize("name", ["test_s_s2", "test_s_s2_state"])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, (0, 2), (1, 2)])
@pytest.mark.parametrize("skipna", [False, True])
def test_a_registered_reduction_with_prefix_field_names_matches_numpy(name, axis, skipna):
    import dask.array as da

    x = np.random.default_rng(3).normal(size=(9, 4, 6))
    x[2, 1, :] = np.nan
    got = packlab.mapreduce(ident, da.from_array(x, chunks=(4, 3, 6)), reduce=name, axis=axis,
                            skipna=skipna).compute(scheduler="sync")
    nan = skipna
    s2 = (np.nansum if nan else np.sum)(x * x, axis=axis)
    s = (np.nansum if nan else np.sum)(x, axis=axis)
    np.testing.assert_allclose(got, s2 - s, rtol=1e-12)


@pytest.mark.parametrize("bad, field", [
    (type("NoName", (Reduction,), {"fields": ("s",)}), "NoName.name"),
    (type("BadName", (Reduction,), {"name": "two words", "fields": ("s",)}), "BadName.name"),
    (type("Builtin", (Reduction,), {"name": "sum", "fields": ("s",)}), "Builtin.name"),
    (type("NoFields", (Reduction,), {"name": "nofields"}), "NoFields.fields"),
    (type("Twice", (Reduction,), {"name": "twice", "fields": ("s", "s")}), "Twice.fields"),
    (type("Listed", (Reduction,), {"name": "listed", "fields": ["s"]}), "Listed.fields"),
    (type("BadParams", (Reduction,), {"name": "badparams", "fields": ("s",), "params": ("a-b",)}),
     "BadParams.params"),
    (dict, "register_reduction(cls)"),
])
def test_register_reduction_checks_the_class(bad, field):
    with pytest.raises(PacklabError, match=re.escape(field)) as e:
        register_reduction(bad)
    assert e.value.field == field and "expected" in str(e.value)
    assert getattr(bad, "name", None) not in REDUCTIONS or REDUCTIONS[bad.name] is not bad


def test_histogram_never_indexes_outside_its_state_under_numba_boundscheck():
    """Ranges of subnormal width, at a float's resolution or overflowing, values on every
    edge and one ulp either side, NaN, infinities, float32/float64/int data: with numba's
    bounds checks on (a fresh process), no bin index leaves the state, and the counts
    are np.histogram's (or both refuse). The code before the fix fails here."""
    import os
    import pathlib
    import subprocess

    script = pathlib.Path(TESTS, "histogram_fuzz.py")
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1",
           "PYTHONPATH": os.pathsep.join([str(script.parent.parent), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, str(script), "200"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "checked" in out.stdout
