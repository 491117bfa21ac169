"""Reduction cases of our peers, ported to packlab.mapreduce.

The cases follow dask's ``dask/array/tests/test_reductions.py``, xarray's reduction
tests (``xarray/tests/test_duck_array_ops.py``: ``test_reduce``, ``test_min_count``,
``test_argmin_max``), and NumPy's ``numpy/lib/tests/test_nanfunctions.py`` and
``numpy/lib/tests/test_histograms.py``, rewritten in our idiom: the reference is what
NumPy, dask or xarray answer on the same data. Each case either agrees with it or is
refused *by design* with a :class:`~packlab.errors.PacklabError` whose message is
asserted (complex, datetime and object data, options packlab does not have such as
``keepdims=``, data-driven bin estimators): ``Refused`` marks those cases.

NumPy's own quirks are the reference too: ``np.var`` divides by zero when ``ddof >= n``
(inf, or NaN for 0/0) where ``np.nanvar`` gives NaN, and packlab follows each.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

import packlab
from packlab.errors import PacklabError


@packlab.kernel
def ident(x):
    return x


PLAIN = {"sum": np.sum, "mean": np.mean, "var": np.var, "std": np.std, "min": np.min, "max": np.max}
NAN = {"sum": np.nansum, "mean": np.nanmean, "var": np.nanvar, "std": np.nanstd, "min": np.nanmin,
       "max": np.nanmax}
MOMENTS = list(PLAIN)


@dataclass(frozen=True)
class Refused:
    """A case packlab refuses by design: a PacklabError whose message matches."""

    match: str


@pytest.fixture(autouse=True)
def _sync():
    with dask.config.set(scheduler="sync"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's all-NaN and empty-slice warnings
        yield


def numpy_ref(x: np.ndarray, red: str, axis, skipna: bool, **kw):
    if red == "count":
        return np.sum(~np.isnan(x), axis=axis) if x.dtype.kind == "f" else np.sum(
            np.ones_like(x, bool), axis=axis)
    return ((NAN if skipna else PLAIN)[red])(x, axis=axis, **kw)


def check(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.kind in "iub" and got.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want)
    else:
        rtol = 1e-5 if np.float32 in (got.dtype, want.dtype) else 1e-7  # dask assert_eq: 1e-5
        np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=rtol, atol=1e-12,
                                   equal_nan=True)


def run_or_refused(fn, expect):
    """``expect`` is the reference answer, or :class:`Refused`."""
    if isinstance(expect, Refused):
        with pytest.raises(PacklabError, match=expect.match):
            np.asarray(fn().compute())
        return
    got = fn()
    check(got.compute() if hasattr(got, "compute") else got, expect)


# -- dask: test_reductions.py ------------------------------------------------------
@pytest.mark.parametrize("skipna", [False, True])
@pytest.mark.parametrize("red", MOMENTS)
@pytest.mark.parametrize("dtype", ["f4", "i4", "c8"])
def test_dask_reductions_1d(dtype, red, skipna):
    """dask test_reductions_1D: arange(5) in chunks of 2, whole array and split_every=2."""
    x = np.arange(5).astype(dtype)
    a = da.from_array(x, chunks=2)
    if dtype == "c8":
        run_or_refused(lambda: packlab.mapreduce(ident, a, reduce=red),
                       Refused("complex64, which is invalid"))
        return
    want = numpy_ref(x, red, None, skipna)
    for split_every in (None, 2, {0: 2}):
        run_or_refused(lambda s=split_every: packlab.mapreduce(ident, a, reduce=red, skipna=skipna,
                                                               split_every=s), want)


@pytest.mark.parametrize("red", MOMENTS)
@pytest.mark.parametrize("x", [[np.inf, np.nan, -np.inf, 2], [np.nan, np.nan, 3, 2]], ids=["infs", "nans"])
def test_dask_reductions_1d_nans(x, red):
    """dask test_reductions_1D_nans: one element per chunk, the nan-functions."""
    x = np.array(x, "f4")
    run_or_refused(lambda: packlab.mapreduce(ident, da.from_array(x, chunks=1), reduce=red, skipna=True),
                   numpy_ref(x, red, None, True))


AXES_2D = [None, 0, 1, -1, -2, (1, 0), ()]


@pytest.mark.parametrize("axis", AXES_2D, ids=str)
@pytest.mark.parametrize("red", MOMENTS)
@pytest.mark.parametrize("dtype", ["f4", "i4"])
def test_dask_reductions_2d(dtype, red, axis):
    """dask test_reductions_2D: an 11x11 array in 4x4 chunks, every axis spelling,
    split_every 4 and per-axis."""
    x = np.arange(1, 122).reshape(11, 11).astype(dtype)
    a = da.from_array(x, chunks=(4, 4))
    want = numpy_ref(x, red, axis, False)
    for split_every in (None, 4, {0: 2, 1: 2}):
        run_or_refused(lambda s=split_every: packlab.mapreduce(ident, a, reduce=red, axis=axis,
                                                               split_every=s), want)


@pytest.mark.parametrize("axis", [None, 0, 1], ids=str)
@pytest.mark.parametrize("skipna", [False, True])
@pytest.mark.parametrize("red", [*MOMENTS, "count"])
def test_dask_reductions_2d_nans(red, skipna, axis):
    """dask test_reductions_2D_nans: chunks with some, all and no NaN."""
    x = np.full((4, 4), np.nan)
    x[:2, :2] = [[1, 2], [3, 4]]
    x[2, 2], x[3, 3] = 5, 6
    run_or_refused(lambda: packlab.mapreduce(ident, da.from_array(x, chunks=2), reduce=red, axis=axis,
                                             skipna=skipna), numpy_ref(x, red, axis, skipna))


@pytest.mark.parametrize("red", ["min", "max"])
def test_dask_min_max_empty_chunks(red):
    """dask test_min_max_empty_chunks: a zero-length chunk in the middle; all empty is
    an error, as NumPy's (here by design a PacklabError, before any compute)."""
    x = np.arange(10)
    run_or_refused(lambda: packlab.mapreduce(ident, da.from_array(x, chunks=((5, 0, 5),)), reduce=red),
                   PLAIN[red](x))
    with pytest.raises(PacklabError, match="over zero elements"):
        packlab.mapreduce(ident, da.arange(10)[:0], reduce=red)


@pytest.mark.parametrize("axis", [None, 0, 1, 2], ids=str)
@pytest.mark.parametrize("shape", [(10, 0, 5), (0, 0, 0)], ids=str)
def test_dask_mean_of_empty_array_is_nan(shape, axis):
    """dask test_reductions_with_empty_array."""
    x = np.ones(shape)
    run_or_refused(lambda: packlab.mapreduce(ident, da.from_array(x, chunks=4), reduce="mean", axis=axis),
                   np.mean(x, axis=axis))


@pytest.mark.parametrize("axis", [None, 0, 1], ids=str)
def test_dask_moment_of_poorly_conditioned_data(axis):
    """dask test_moment: the second moment of [1, 2, 3] * 10 + 1e8 (a large mean)."""
    x = np.array([1.0, 2.0, 3.0] * 10).reshape((3, 10)) + 1e8
    run_or_refused(lambda: packlab.mapreduce(ident, da.from_array(x, chunks=5), reduce="var", axis=axis),
                   np.var(x, axis=axis))


@pytest.mark.parametrize("axis", [2, -3, (0, 0)], ids=str)
def test_dask_reduction_errors(axis):
    """dask test_reduction_errors: an axis the array lacks (and NumPy's repeated axis)."""
    run_or_refused(lambda: packlab.mapreduce(ident, da.ones((5, 5), chunks=3), axis=axis),
                   Refused(r"axis=.* is invalid"))


@pytest.mark.parametrize("red", MOMENTS)
def test_dask_reductions_0d(red):
    """dask test_reductions_0D: a NumPy integer scalar."""
    x = np.int_(3)
    run_or_refused(lambda: packlab.mapreduce(ident, x, reduce=red), PLAIN[red](x))
    run_or_refused(lambda: packlab.mapreduce(ident, da.from_array(x, chunks=()), reduce=red), PLAIN[red](x))


@pytest.mark.parametrize("axes", [(0, 1), (1, 2), (0, 2), (0, 1, 2)], ids=str)
@pytest.mark.parametrize("chunks", list(itertools.permutations(((2, 1) * 8, (3,) * 8, (6,) * 4)))[:3])
def test_dask_chunk_structure_independence(chunks, axes):
    """dask test_chunk_structure_independence: the answer does not depend on the chunks."""
    shape = tuple(sum(c) for c in chunks)
    x = np.arange(np.prod(shape), dtype="f8").reshape(shape)
    for red in ("sum", "var", "max"):
        run_or_refused(lambda r=red: packlab.mapreduce(ident, da.from_array(x, chunks=chunks), reduce=r,
                                                       axis=axes, split_every=2), PLAIN[red](x, axis=axes))


@pytest.mark.parametrize("make, match", [
    (lambda: np.array([[1, np.nan, 3, 4], [5, 6, 7, np.nan]]).astype(object),
     "dtype object, which is invalid"),
    (lambda: np.arange(5).astype("datetime64[ns]"), "dtype datetime64.ns., which is invalid"),
    (lambda: np.arange(5).astype("timedelta64[s]"), "dtype timedelta64.s., which is invalid"),
], ids=["object", "datetime", "timedelta"])
def test_dask_non_numeric_data_is_refused(make, match):
    """dask test_nan_object, test_reductions_1D_datetime: packlab kernels are numeric."""
    run_or_refused(lambda: packlab.mapreduce(ident, make(), reduce="sum"), Refused(match))


@pytest.mark.parametrize("option, value", [("keepdims", True), ("dtype", "f8"), ("out", None),
                                           ("where", True), ("min_count", 1)])
def test_options_of_peers_packlab_lacks_are_refused(option, value):
    """dask's dtype=/keepdims=, NumPy's out=/where=, xarray's min_count= (test_min_count):
    not options of packlab's reductions; refused, never ignored."""
    run_or_refused(lambda: packlab.mapreduce(ident, np.ones(3), reduce="sum", **{option: value}),
                   Refused(f"{option}={value!r} is not an option of reduce='sum'"))


# -- NumPy: test_nanfunctions.py -----------------------------------------------------
@pytest.mark.parametrize("axis", [None, 0, 1], ids=str)
@pytest.mark.parametrize("red", [*MOMENTS, "count"])
def test_numpy_all_nan_slices(red, axis):
    """TestNanFunctions_*: all-NaN slices give NaN (min, max, mean, var, std), 0 (sum,
    count); the other slices are unaffected."""
    x = np.array([[np.nan, 1.0, np.nan], [np.nan, 2.0, 3.0]])
    run_or_refused(lambda: packlab.mapreduce(ident, da.from_array(x, chunks=1), reduce=red, axis=axis,
                                             skipna=True), numpy_ref(x, red, axis, True))


@pytest.mark.parametrize("skipna", [False, True])
@pytest.mark.parametrize("ddof", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("red", ["var", "std"])
def test_numpy_ddof(red, ddof, skipna):
    """TestNanFunctions_MeanVarStd.test_ddof and test_ddof_too_big: ddof >= n is inf or
    NaN for np.var, NaN for np.nanvar."""
    x = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 7.0]])
    if not skipna:
        x = np.nan_to_num(x, nan=2.0)
    run_or_refused(lambda: packlab.mapreduce(ident, da.from_array(x, chunks=(1, 2)), reduce=red, axis=1,
                                             ddof=ddof, skipna=skipna),
                   numpy_ref(x, red, 1, skipna, ddof=ddof))


@pytest.mark.parametrize("red", ["sum", "mean", "var", "std", "count", "min"])
@pytest.mark.parametrize("shape, axis", [((0,), None), ((0, 3), 0), ((0, 3), 1), ((3, 0), 0)], ids=str)
def test_numpy_empty(shape, axis, red):
    """test_empty: sums of nothing are 0, means and variances NaN; min of nothing is an
    error (NumPy: ValueError; packlab: PacklabError before any compute)."""
    x = np.ones(shape)
    n_reduced = np.prod([shape[a] for a in (range(len(shape)) if axis is None else [axis])])
    want = Refused("over zero elements") if red == "min" and n_reduced == 0 else numpy_ref(x, red, axis, True)
    run_or_refused(lambda: packlab.mapreduce(ident, x, reduce=red, axis=axis, skipna=True), want)


@pytest.mark.parametrize("red", MOMENTS)
@pytest.mark.parametrize("dtype", ["i1", "i8", "u2", "u8", "bool"])
def test_numpy_nan_functions_of_integers_are_the_plain_ones(dtype, red):
    """test_integer_types / test_allnans of ints: nan-functions of ints have nothing to skip."""
    x = (np.arange(12).reshape(3, 4) % 5).astype(dtype)
    if dtype == "bool" and red in ("var", "std", "mean"):
        want = NAN[red](x.astype("f8"), axis=0)
    else:
        want = NAN[red](x, axis=0)
    run_or_refused(lambda: packlab.mapreduce(ident, x, reduce=red, axis=0, skipna=True), want)


@pytest.mark.parametrize("red", MOMENTS)
def test_numpy_infinities(red):
    """test_nanfunctions with inf: inf is a value, not a NaN."""
    x = np.array([[np.inf, 1.0, np.nan], [-np.inf, 2.0, 3.0], [np.inf, -np.inf, 1.0]])
    run_or_refused(lambda: packlab.mapreduce(ident, x, reduce=red, axis=0, skipna=True),
                   numpy_ref(x, red, 0, True))


# -- NumPy: test_histograms.py ---------------------------------------------------------
def hist(x, **kw):
    return packlab.mapreduce(ident, np.asarray(x), reduce="histogram", **kw)


HIST = {
    # name: (data, options, reference: options for np.histogram, or Refused)
    "simple": (np.linspace(0, 10, 100), {"bins": 10, "range": (0, 10)}, None),
    "one_bin_edges": ([1, 2, 3, 4], {"bins": [1, 2]}, None),
    "one_bin_count": ([1, 2], {"bins": 1, "range": (1, 2)}, None),
    "zero_bins": ([1, 2], {"bins": 0, "range": (1, 2)}, Refused("bins=0 is invalid")),
    "outliers_low": (np.arange(10) + 0.5, {"bins": 10, "range": (0, 9)}, None),
    "outliers_high": (np.arange(10) + 0.5, {"bins": 10, "range": (1, 10)}, None),
    "outliers_both": (np.arange(10) + 0.5, {"bins": 8, "range": (1, 9)}, None),
    "bool": (np.array([True, True, False]), {"bins": 10, "range": (0, 1)}, None),
    "f32_rounding": (np.array([276.318359, -69.593948, 21.329449], "f4"),
                     {"bins": 100, "range": (-69.593948, 276.318359)}, None),
    "empty": (np.array([]), {"bins": [0, 1]}, None),
    "float_bins": (np.linspace(0, 1, 100), {"bins": 2.4, "range": (0, 1)}, Refused("bins=2.4 is invalid")),
    "nan_range": (np.linspace(0, 1, 100), {"bins": 10, "range": (np.nan, 0.75)}, Refused("finite lo and hi")),
    "inf_range": (np.linspace(0, 1, 100), {"bins": 10, "range": (0.25, np.inf)}, Refused("finite lo and hi")),
    "reversed_range": (np.linspace(0, 1, 100), {"bins": 10, "range": (1, 0)}, Refused("lo <= hi")),
    "empty_range_widened": ([1.0, 1.0, 1.2], {"bins": 4, "range": (1, 1)}, None),
    "bin_edge_cases": (np.array([337, 404, 739, 806, 1007, 1811, 2012]), {"bins": 8296, "range": (2, 2280)},
                       None),
    "last_bin_inclusive": (np.array([0., 0., 0., 1., 2., 3., 3., 4., 5.]), {"bins": 30, "range": (-0.5, 5)},
                           None),
    "unsigned_monotonicity": (np.array([2]), {"bins": np.array([1, 3, 1], "u8")}, Refused("increasing bin")),
    "one_nan_range": (np.array([0, 1, np.nan]), {"bins": 3, "range": (0, 1)}, None),
    "all_nan_range": (np.array([np.nan, np.nan]), {"bins": 3, "range": (0, 1)}, None),
    "one_nan_edges": (np.array([0, 1, np.nan]), {"bins": [0, 1]}, None),
    "all_nan_edges": (np.array([np.nan, np.nan]), {"bins": [0, 1]}, None),
    "auto_estimator": (np.arange(10.0), {"bins": "auto", "range": (0, 1)}, Refused("bins='auto' is invalid")),
    "no_range": (np.arange(10.0), {"bins": 10}, Refused("range=None is invalid")),
    "datetime": (np.datetime64("2000-01-01", "D") + np.arange(5), {"bins": [0, 2, 7]},
                 Refused("datetime64.D., which is invalid")),
    "inf_edge_low": (np.arange(6), {"bins": [-np.inf, 2, 10]}, None),
    "inf_edge_high": (np.arange(6), {"bins": np.array([-1, 2, np.inf])}, None),
    "inf_edges_both": (np.arange(6), {"bins": [-np.inf, 3, np.inf]}, None),
    "rightmost_below": ([0.9999999995], {"bins": [0.0, 0.5, 1.0]}, None),
    "rightmost_on": ([1.0], {"bins": [0.0, 0.5, 1.0]}, None),
    "rightmost_above": ([1.0000000001], {"bins": [0.0, 0.5, 1.0]}, None),
    "rightmost_far": ([1.0001], {"bins": [0.0, 0.5, 1.0]}, None),
    "equal_edges": (np.array([0, 1, 2]), {"bins": np.array([0, 2, 2])}, None),
    "large_integers": (np.array([2**60]), {"bins": np.array([2**60 - 1, 2**60 + 1])}, None),
    "too_many_bins": (np.array([0.0, 1.0]), {"bins": 4, "range": (-1e308, 1e308)}, Refused("do not fit in")),
    "narrow_subnormal": (np.array([0.0, 1e-321, 5e-321, 1e-320, 1.0]), {"bins": 4, "range": (0, 1e-320)},
                         None),
    "narrow_resolution": (np.array([1.0, 1.0 + 2e-16]), {"bins": 1000, "range": (1.0, 1.0 + 1e-15)},
                          Refused("do not fit in")),
    "precision_lower_f32_f64": (np.array([1.0], "f4"),
                                {"bins": 1, "range": np.array([1.0 + np.finfo("f8").eps, 2.0])}, None),
    "precision_upper_f32_f64": (np.array([1.0], "f4"),
                                {"bins": 1, "range": np.array([0.0, 1.0 - np.finfo("f8").eps])}, None),
    "python_range_f32": (np.array([0.1, 0.2, 0.3, 0.7], "f4"), {"bins": 3, "range": (0.1, 0.7)}, None),
    "numpy_f64_range_f32": (np.array([0.1, 0.2, 0.3, 0.7], "f4"),
                            {"bins": 3, "range": (np.float64(0.1), np.float64(0.7))}, None),
}
for _dt in ("i1", "i2", "i4", "i8"):
    _e = 8 * np.dtype(_dt).itemsize - 1
    HIST[f"signed_overflow_bounds_{_dt}"] = (np.array([-2**_e + 4, 2**_e - 4], _dt),
                                             {"bins": 2, "range": (-2**_e + 4, 2**_e - 4)}, None)


@pytest.mark.parametrize("name", list(HIST))
def test_numpy_histogram(name):
    x, options, ref = HIST[name]
    if ref is None:
        opts = dict(options)
        ref = np.histogram(np.asarray(x), bins=opts.pop("bins"), range=opts.pop("range", None))[0]
    run_or_refused(lambda: hist(x, **options), ref)


RANGES = [(0, 1), (-0.5, 5), (2, 2280), (1e-3, 1e-3 + 1e-9), (-1e30, 1e30), (-69.593948, 276.318359)]


@pytest.mark.parametrize("rng", RANGES, ids=str)
@pytest.mark.parametrize("bins", [1, 3, 7, 10, 100, 1000])
@pytest.mark.parametrize("dtype", ["f4", "f8"])
def test_numpy_histogram_at_every_edge(dtype, bins, rng):
    """Values exactly on every edge and one ulp either side, the range's ends, NaN and
    infinities: the same counts as np.histogram, which builds its edges in the data's
    type; where NumPy cannot make the edges, packlab refuses too."""
    try:
        with np.errstate(all="ignore"):
            edges = np.histogram_bin_edges(np.zeros(0, dtype), bins=bins, range=rng)
    except ValueError:
        with pytest.raises(PacklabError, match="do not fit in"):
            hist(np.zeros(1, dtype), bins=bins, range=rng)
        return
    e = edges.astype(dtype)
    x = np.concatenate([e, np.nextafter(e, np.inf, dtype=e.dtype), np.nextafter(e, -np.inf, dtype=e.dtype),
                        np.array([np.nan, np.inf, -np.inf], dtype)]).astype(dtype)
    with np.errstate(all="ignore"):
        want = np.histogram(x, bins=bins, range=rng)[0]
    chunks = max(1, x.size // 3)
    got = packlab.mapreduce(ident, da.from_array(x, chunks=chunks), reduce="histogram", bins=bins,
                            range=rng).compute()
    np.testing.assert_array_equal(got, want)
    assert got.sum() == want.sum() <= x.size


# -- xarray: test_duck_array_ops.py ------------------------------------------------------
def _series(dtype, dims: int, dask_backed: bool) -> xr.DataArray:
    rng = np.random.default_rng(0)
    shape = (16, 3)[:dims] if dims > 1 else (16,)
    values = rng.normal(size=shape) * 5
    if dtype == "bool":
        values = values > 0
    else:
        values = values.astype(dtype)
    if np.dtype(dtype).kind == "f":
        values.flat[::5] = np.nan
    dims_ = ("x", "y")[:dims]
    data = da.from_array(values, chunks=5) if dask_backed else values
    return xr.DataArray(data, dims=dims_, coords={"x": np.arange(shape[0])})


@pytest.mark.parametrize("dim", [None, "x"])
@pytest.mark.parametrize("skipna", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "bool"])
@pytest.mark.parametrize("red", ["sum", "min", "max", "mean", "var", "std", "count"])
def test_xarray_reduce(red, dtype, skipna, dim):
    """xarray test_reduce: DataArrays of floats with NaN, ints and bools, dask- and
    NumPy-backed, every reduction with and without skipna, over all dims or one."""
    for dims, dask_backed in ((1, True), (2, False)):
        a = _series(dtype, dims, dask_backed)
        if red == "count":
            want = a.count(dim=dim)
        elif dtype == "bool" and red in ("var", "std"):
            want = getattr(a.astype(float), red)(dim=dim, skipna=skipna)
        else:
            want = getattr(a, red)(dim=dim, skipna=skipna)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", packlab.PacklabWarning)  # the count of a bool kernel
            got = packlab.mapreduce(ident, a, reduce=red, dim=dim, skipna=skipna)
        assert isinstance(got, xr.DataArray) and got.dims == want.dims
        check(got.compute().values, want.compute().values)


def test_xarray_count_counts_valid_values_not_non_zero_ones():
    """xarray count(): zeros count, NaN does not, whatever skipna says."""
    a = xr.DataArray(np.array([[0.0, np.nan, 2.0], [0.0, 0.0, np.nan]]), dims=("t", "x"))
    for skipna in (False, True):
        got = packlab.mapreduce(ident, a, reduce="count", dim="t", skipna=skipna).compute()
        xr.testing.assert_equal(got.rename(None), a.count("t"))
