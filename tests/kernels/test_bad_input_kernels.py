"""Bad input to packlab.kernel, packlab.mapreduce and register_reduction.

Every case raises :class:`~packlab.errors.PacklabError` (a ``ValueError``) before any
compute, whose message names the field, the value given and the fix, and whose
``field`` attribute names the field; none is a raw numba, dask or NumPy error.
"""

from __future__ import annotations

import functools
import math

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import packlab
from packlab.errors import PacklabError
from packlab.kernels import Reduction, register_reduction


@packlab.kernel
def ident(x):
    return x


@packlab.kernel
def anomaly(t, clim):
    return (t - clim) ** 2


def mr(*arrays, kern=ident, **kw):
    return packlab.mapreduce(kern, *(arrays or (np.zeros((2, 3)),)), **kw)


def _field():
    return xr.DataArray(np.zeros((2, 3)), dims=("time", "lat"))


def _unknown_chunks():
    x = da.arange(6.0, chunks=3)
    return x[x > 2]


def _variadic(*args):
    return 0


def _plus(a, b):
    return a + b


class _Callable:
    def __call__(self, x):
        return x


# (id, call, field, value as it appears in the message, a phrase of the fix)
CASES = [
    # -- the kernel ----------------------------------------------------------------
    ("kernel-not-callable", lambda: packlab.kernel(3), "kernel", "kernel=3", "@packlab.kernel"),
    ("kernel-variadic", lambda: packlab.kernel(_variadic), "kernel", "'_variadic'", "def f(t, clim)"),
    ("kernel-call-str", lambda: ident(np.array(["a"])), "ident argument 0", "<U1", ".astype('float64')"),
    ("kernel-call-complex", lambda: ident(np.ones(2, complex)), "ident argument 0", "complex128",
     ".astype('float64')"),
    ("kernel-too-few-arrays", lambda: mr(np.zeros(3), kern=anomaly), "arrays", "1 array(s)",
     "one array (or scalar) per kernel argument"),
    ("mapreduce-kernel-not-callable", lambda: packlab.mapreduce("x**2", np.zeros(3)), "kernel", "'x**2'",
     "@packlab.kernel"),
    # numba compiles Python functions only: never its raw "not a function" TypeError
    ("kernel-builtin", lambda: packlab.mapreduce(math.sin, np.arange(3.0)), "kernel",
     "<built-in function sin>", "Wrap it: lambda x: math.sin(x)"),
    ("kernel-builtin-two-arguments", lambda: packlab.mapreduce(math.atan2, np.ones(3), np.ones(3)), "kernel",
     "<built-in function atan2>", "lambda y, x: math.atan2(y, x)"),
    ("kernel-ufunc", lambda: packlab.mapreduce(np.sin, np.arange(3.0)), "kernel", "<ufunc 'sin'>",
     "Wrap it: lambda x: np.sin(x)"),
    ("kernel-decorates-ufunc", lambda: packlab.kernel(np.add), "kernel", "<ufunc 'add'>",
     "lambda a, b: np.add(a, b)"),
    ("kernel-class", lambda: packlab.mapreduce(float, np.arange(3)), "kernel", "<class 'float'>",
     "lambda x: float(x)"),
    ("kernel-partial", lambda: packlab.mapreduce(functools.partial(_plus, b=1), np.zeros(3)), "kernel",
     "functools.partial", "a Python function with @packlab.kernel"),
    ("kernel-callable-object", lambda: packlab.mapreduce(_Callable(), np.zeros(3)), "kernel", "_Callable",
     "a Python function with @packlab.kernel"),
    # -- dtypes and shapes --------------------------------------------------------------
    ("no-arrays", lambda: packlab.mapreduce(ident), "arrays", "arrays=()", "one per kernel argument"),
    ("dtype-object", lambda: mr(np.array([1, None], object)), "arrays[0]", "dtype object",
     ".astype('float64')"),
    ("dtype-long-double", lambda: mr(np.zeros(3, np.longdouble)), "arrays[0]", str(np.dtype(np.longdouble)),
     ".astype('float64')"),
    ("dtype-datetime", lambda: mr(np.arange(3).astype("M8[s]")), "arrays[0]", "datetime64[s]",
     ".astype('float64')"),
    ("dtype-complex", lambda: mr(np.zeros(3, "c16")), "arrays[0]", "complex128", ".astype('float64')"),
    ("dtype-str-list", lambda: mr(["a", "b"]), "arrays[0]", "<U1", ".astype('float64')"),
    ("dtype-second-input", lambda: mr(np.zeros(3), np.array(["a"] * 3), kern=anomaly), "arrays[1]", "<U1",
     ".astype('float64')"),
    ("unknown-chunks", lambda: mr(_unknown_chunks()), "arrays[0]", "(nan,)", ".compute_chunk_sizes()"),
    ("shapes", lambda: mr(np.zeros((3, 2)), np.zeros(3), kern=anomaly), "arrays", "[(3, 2), (3,)]",
     "equal or 1"),
    # -- axis and dim ---------------------------------------------------------------------
    ("axis-too-big", lambda: mr(axis=2), "axis", "axis=2", "from -2 to 1"),
    ("axis-too-negative", lambda: mr(axis=-3), "axis", "axis=-3", "from -2 to 1"),
    ("axis-repeated", lambda: mr(axis=(0, 0)), "axis", "axis=(0, 0)", "Remove the repeat"),
    ("axis-repeated-negative", lambda: mr(axis=(1, -1)), "axis", "axis=(1, -1)", "Remove the repeat"),
    ("axis-on-0d", lambda: mr(np.float64(3.0), axis=0), "axis", "axis=0", "use axis=None"),
    ("axis-str", lambda: mr(axis="0"), "axis", "axis='0'", "whole numbers"),
    ("axis-float", lambda: mr(axis=0.5), "axis", "axis=0.5", "whole numbers"),
    ("axis-bool", lambda: mr(axis=True), "axis", "axis=True", "whole numbers"),
    ("axis-and-dim", lambda: mr(_field(), axis=0, dim="time"), "dim", "dim='time'", "not both"),
    ("dim-without-dataarray", lambda: mr(dim="x"), "dim", "dim='x'", "use axis="),
    ("dim-missing", lambda: mr(_field(), dim="depth"), "dim", "dim='depth'", "('time', 'lat')"),
    ("dim-repeated", lambda: mr(_field(), dim=["time", "time"]), "dim", "['time', 'time']",
     "Remove the repeated name"),
    ("dim-not-str", lambda: mr(_field(), dim=3), "dim", "dim=3", "('time', 'lat')"),
    # -- reduce names -----------------------------------------------------------------------
    ("reduce-unknown", lambda: mr(reduce="median"), "reduce", "reduce='median'", "choose one of"),
    ("reduce-empty", lambda: mr(reduce=""), "reduce", "reduce=''", "choose one of"),
    ("reduce-number", lambda: mr(reduce=3), "reduce", "reduce=3", "such as 'sum'"),
    ("option-of-other-reduction", lambda: mr(reduce="sum", bins=3), "bins", "bins=3", "Remove it"),
    ("option-keepdims", lambda: mr(reduce="mean", keepdims=True), "keepdims", "keepdims=True", "Remove it"),
    # -- bins and range ------------------------------------------------------------------------
    ("bins-missing", lambda: mr(reduce="histogram"), "bins", "bins=None", "bins=10, range=(0, 1)"),
    ("bins-zero", lambda: mr(reduce="histogram", bins=0, range=(0, 1)), "bins", "bins=0", "bins=10"),
    ("bins-negative", lambda: mr(reduce="histogram", bins=-3, range=(0, 1)), "bins", "bins=-3", "bins=10"),
    ("bins-float", lambda: mr(reduce="histogram", bins=2.5, range=(0, 1)), "bins", "bins=2.5", "bins=10"),
    ("bins-whole-float", lambda: mr(reduce="histogram", bins=3.0, range=(0, 1)), "bins", "bins=3.0",
     "Pass 3 (an int), not a float. e.g. bins=10"),
    ("bins-estimator", lambda: mr(reduce="histogram", bins="auto"), "bins", "bins='auto'",
     "give the range of interest"),
    ("bins-2d", lambda: mr(reduce="histogram", bins=[[0, 1], [1, 2]]), "bins", "[[0, 1], [1, 2]]",
     "bins=[0, 1, 2.5]"),
    ("bins-decreasing", lambda: mr(reduce="histogram", bins=[3, 2, 1]), "bins", "[3, 2, 1]",
     "bins=[0, 1, 2.5]"),
    ("bins-nan-edge", lambda: mr(reduce="histogram", bins=[0, np.nan, 1]), "bins", "nan", "bins=[0, 1, 2.5]"),
    ("bins-one-edge", lambda: mr(reduce="histogram", bins=[1.0]), "bins", "[1.0]", "bins=[0, 1, 2.5]"),
    ("range-missing", lambda: mr(reduce="histogram", bins=4), "range", "range=None", "range=(0, 1)"),
    ("range-reversed", lambda: mr(reduce="histogram", bins=4, range=(1, 0)), "range", "range=(1, 0)",
     "swap them"),
    ("range-infinite", lambda: mr(reduce="histogram", bins=4, range=(0, np.inf)), "range", "range=(0, inf)",
     "range=(0, 1)"),
    ("range-nan", lambda: mr(reduce="histogram", bins=4, range=(np.nan, 1)), "range", "range=(nan, 1)",
     "range=(0, 1)"),
    ("range-strings", lambda: mr(reduce="histogram", bins=4, range=("0", "1")), "range", "('0', '1')",
     "range=(0, 1)"),
    ("range-bools", lambda: mr(reduce="histogram", bins=4, range=(False, True)), "range",
     "range=(False, True)", "range=(0, 1)"),
    ("range-three", lambda: mr(reduce="histogram", bins=4, range=(0, 1, 2)), "range", "(0, 1, 2)",
     "range=(0, 1)"),
    ("range-with-edges", lambda: mr(reduce="histogram", bins=[0, 1], range=(0, 1)), "range", "range=(0, 1)",
     "Remove range="),
    ("range-width-overflows", lambda: mr(reduce="histogram", bins=4, range=(-1e308, 1e308)), "range",
     "(-1e+308, 1e+308)", "moderate width"),
    ("range-too-narrow", lambda: mr(reduce="histogram", bins=1000, range=(1.0, 1.0 + 1e-15)), "range",
     "bins=1000", "fewer bins"),
    # -- ddof --------------------------------------------------------------------------------
    ("ddof-negative", lambda: mr(reduce="var", ddof=-1), "ddof", "ddof=-1", "ddof=1 for the sample variance"),
    ("ddof-float", lambda: mr(reduce="std", ddof=1.5), "ddof", "ddof=1.5", "ddof=1"),
    ("ddof-str", lambda: mr(reduce="var", ddof="1"), "ddof", "ddof='1'", "ddof=1"),
    ("ddof-bool", lambda: mr(reduce="var", ddof=True), "ddof", "ddof=True", "ddof=1"),
    ("ddof-on-sum", lambda: mr(reduce="sum", ddof=1), "ddof", "ddof=1", "Remove it"),
    # -- device --------------------------------------------------------------------------------
    ("device-unknown", lambda: mr(device="tpu"), "device", "device='tpu'", "device='auto'"),
    ("device-none", lambda: mr(device=None), "device", "device=None", "device='auto'"),
    ("device-upper", lambda: mr(device="GPU"), "device", "device='GPU'", "device='auto'"),
    # -- combine and identity -----------------------------------------------------------------
    ("custom-no-combine", lambda: mr(reduce="custom", identity=0), "combine", "combine=None",
     "combine=lambda a, b"),
    ("custom-combine-not-callable", lambda: mr(reduce="custom", combine=3, identity=0), "combine",
     "combine=3", "combine=lambda a, b"),
    ("custom-no-identity", lambda: mr(reduce="custom", combine=lambda a, b: a + b), "identity",
     "identity=None", "identity=0.0"),
    ("custom-identity-str", lambda: mr(reduce=lambda a, b: a + b, identity="zero"), "identity",
     "identity='zero'", "identity=0.0"),
    ("custom-identity-list", lambda: mr(reduce=lambda a, b: a + b, identity=[0]), "identity",
     "identity=[0]", "identity=0.0"),
    ("custom-identity-bool", lambda: mr(reduce=_plus, identity=True), "identity", "identity=True",
     "identity=0.0"),
    ("custom-identity-numpy-bool", lambda: mr(reduce=_plus, identity=np.False_), "identity",
     f"identity={np.False_!r}", "identity=0.0"),
    ("custom-identity-too-big", lambda: mr(reduce=_plus, identity=10**30), "identity", "identity=10000",
     "identity=0.0"),
    ("custom-combine-ufunc", lambda: mr(reduce=np.maximum, identity=0.0), "combine", "<ufunc 'maximum'>",
     "Wrap it: lambda a, b: np.maximum(a, b)"),
    ("custom-combine-builtin", lambda: mr(reduce="custom", combine=max, identity=0.0), "combine",
     "<built-in function max>", "Wrap it: lambda a, b: max(a, b)"),
    ("custom-combine-arity", lambda: mr(reduce="custom", combine=lambda a: a, identity=0), "combine",
     "not of 1", "combine=lambda a, b: a + b"),
    ("custom-both", lambda: mr(reduce=lambda a, b: a + b, combine=lambda a, b: a * b, identity=0), "combine",
     "combine=<function", "reduce='custom', combine=f"),
    # -- skipna and split_every ------------------------------------------------------------
    ("skipna-str", lambda: mr(skipna="no"), "skipna", "skipna='no'", "skipna=False"),
    ("skipna-int", lambda: mr(skipna=1), "skipna", "skipna=1", "skipna=True"),
    ("skipna-none", lambda: mr(skipna=None), "skipna", "skipna=None", "skipna=True"),
    ("split-every-one", lambda: mr(split_every=1), "split_every", "split_every=1", "split_every=8"),
    ("split-every-str", lambda: mr(split_every="4"), "split_every", "split_every='4'", "split_every=8"),
    ("split-every-dict", lambda: mr(split_every={0: 0}), "split_every", "split_every=0", "split_every=8"),
    ("split-every-dict-no-such-axis", lambda: mr(np.zeros(3), split_every={5: 2}), "split_every",
     "split_every={5: 2}", "axes from -1 to 0"),
    ("split-every-dict-0d", lambda: mr(np.float64(1.0), split_every={0: 2}), "split_every",
     "split_every={0: 2}", "pass a number or None"),
    ("split-every-dict-axis-twice", lambda: mr(split_every={1: 2, -1: 4}), "split_every",
     "split_every={1: 2, -1: 4}", "Remove the repeat"),
    ("split-every-dict-str-axis", lambda: mr(split_every={"0": 2}), "split_every", "{'0': 2}",
     "split_every={0: 8}"),
    # -- register_reduction -------------------------------------------------------------------
    ("register-not-a-class", lambda: register_reduction(len), "register_reduction(cls)",
     "<built-in function len>", "class MyReduction(Reduction)"),
    ("register-no-name", lambda: register_reduction(type("R1", (Reduction,), {"fields": ("s",)})), "R1.name",
     "None", "name = '...'"),
    ("register-builtin-name", lambda: register_reduction(type("R2", (Reduction,), {"name": "mean",
                                                                                    "fields": ("s",)})),
     "R2.name", "'mean'", "name of its own"),
    ("register-fields-str", lambda: register_reduction(type("R3", (Reduction,), {
        "name": "r3", "fields": "s"})), "R3.fields", "'s'", "fields = (...)"),
    ("register-fields-repeated", lambda: register_reduction(type("R4", (Reduction,), {
        "name": "r4", "fields": ("s2", "s2")})), "R4.fields", "('s2', 's2')", "fields = (...)"),
    ("register-params-bad", lambda: register_reduction(type("R5", (Reduction,), {
        "name": "r5", "fields": ("s",), "params": ("p-1",)})), "R5.params", "('p-1',)", "params = (...)"),
]


@pytest.mark.parametrize("call, field, value, fix", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_names_field_value_and_fix(call, field, value, fix):
    with pytest.raises(PacklabError) as e:
        call()
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert field in msg, f"field {field!r} not named: {msg}"
    assert value in msg, f"value {value!r} not named: {msg}"
    assert fix in msg, f"fix {fix!r} not given: {msg}"
    assert e.value.field == field, f"field attribute {e.value.field!r} is not {field!r}"


def test_the_catalogue_is_large_and_distinct():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_gpu_without_one_names_device_and_the_fix():
    from packlab.kernels.cuda import local_gpu

    if local_gpu():
        pytest.skip("this machine has a GPU")
    with pytest.raises(PacklabError, match=r"device='gpu' but no CUDA device.*use device='cpu'") as e:
        mr(device="gpu")
    assert e.value.field == "device"
