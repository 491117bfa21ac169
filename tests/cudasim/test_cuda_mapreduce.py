"""The CUDA path of packlab.mapreduce under numba's CUDA simulator, against NumPy."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_kernels_mapreduce import REDUCTIONS, anomaly, assert_matches, ident, poly, reference

import packlab
from packlab.kernels import cuda
from packlab.kernels.reductions import make_reduction


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


def test_simulator_is_on():
    assert cuda.simulator() and cuda.local_gpu()
    # auto only picks GPUs offered by a cluster, never the simulator by surprise
    assert cuda.resolve_device("auto") is False and cuda.resolve_device("gpu") is True


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["float64", "float32", "int64"]),
       hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6),
       st.sampled_from(REDUCTIONS), st.booleans(), st.booleans(), st.data())
def test_gpu_matches_numpy(dtype, shape, red, skipna, with_nan, data):
    rng = np.random.default_rng(len(shape))
    x = (rng.normal(size=shape) * 10).astype(dtype)
    if with_nan and x.dtype.kind == "f" and x.size:
        x.flat[:: max(1, x.size // 3)] = np.nan
    axis = data.draw(st.none() | st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1)
                     .map(lambda a: tuple(sorted(a))))
    n_reduced = np.prod([shape[a] for a in (axis if axis is not None else range(len(shape)))])
    if red in ("min", "max") and n_reduced == 0:
        return  # an error before any device work; tested on CPU
    chunks = tuple(max(1, n // 2) for n in shape)
    got = packlab.mapreduce(poly, da.from_array(x, chunks=chunks), reduce=red, axis=axis,
                            skipna=skipna, device="gpu").compute()
    v = poly(x)
    assert_matches(got, reference(v, red, axis, skipna), v)


def test_gpu_broadcasting_and_many_cells():
    # 40 kept cells > the simulator's 16 threads: each thread owns whole cells
    t = np.random.default_rng(1).normal(size=(9, 40))
    clim = t.mean(axis=0)
    got = packlab.mapreduce(anomaly, da.from_array(t, chunks=(4, 40)), clim, reduce="var", axis=0,
                            device="gpu").compute()
    np.testing.assert_allclose(got, np.var((t - clim) ** 2, axis=0))


def test_gpu_histogram_and_user_combine():
    x = np.random.default_rng(2).normal(size=(30, 3))
    x[4, 1] = np.nan
    got = packlab.mapreduce(ident, da.from_array(x, chunks=(7, 3)), reduce="histogram", bins=5,
                            range=(-2, 2), axis=0, device="gpu").compute()
    want = np.stack([np.histogram(c[~np.isnan(c)], 5, (-2, 2))[0] for c in x.T])
    np.testing.assert_array_equal(got, want)
    edges = [-3.0, -1.0, 0.0, 0.5, 3.0]
    got = packlab.mapreduce(ident, np.nan_to_num(x), reduce="histogram", bins=edges, device="gpu")
    np.testing.assert_array_equal(got.compute(), np.histogram(np.nan_to_num(x), edges)[0])

    def maxabs(a, b):
        return max(a, abs(b))

    got = packlab.mapreduce(ident, np.nan_to_num(x), reduce=maxabs, identity=0.0, device="gpu")
    assert got.compute() == np.abs(np.nan_to_num(x)).max()


def test_gpu_variance_is_stable_on_ill_conditioned_data():
    x = 1e9 + np.random.default_rng(3).random(3000)
    got = packlab.mapreduce(ident, da.from_array(x, chunks=1000), reduce="var", device="gpu")
    np.testing.assert_allclose(got.compute(), np.var(x), rtol=1e-6)


def test_generated_kernel_source_has_no_atomics():
    src = cuda.gpu_source(2, (False, True), make_reduction("var", np.dtype("f8"), True, {}))
    assert "atomic" not in src and "s_n[row, o] = l_n" in src


def test_gpu_results_that_differ_only_in_parameters_do_not_share_layers():
    x = np.random.default_rng(4).normal(size=(40, 3))
    d = da.from_array(x, chunks=(9, 3))

    def biggest(a, b):
        return max(a, b)

    results = [
        packlab.mapreduce(ident, d, reduce="histogram", bins=4, range=(-2, 2), device="gpu"),
        packlab.mapreduce(ident, d, reduce="histogram", bins=4, range=(0, 1), device="gpu"),
        packlab.mapreduce(ident, d, reduce="custom", combine=biggest, identity=0.0, axis=0,
                          device="gpu"),
        packlab.mapreduce(ident, d, reduce=biggest, identity=-np.inf, axis=0, device="gpu"),
    ]
    got = dask.compute(*results)
    np.testing.assert_array_equal(got[0], np.histogram(x, 4, (-2, 2))[0])
    np.testing.assert_array_equal(got[1], np.histogram(x, 4, (0, 1))[0])
    np.testing.assert_array_equal(got[2], np.maximum(x.max(axis=0), 0.0))
    np.testing.assert_array_equal(got[3], x.max(axis=0))


@pytest.mark.parametrize("name", ["test_s_s2", "test_s_s2_state"])
@pytest.mark.parametrize("axis", [None, 0, (1, 2)])
def test_gpu_registered_reduction_with_prefix_field_names(name, axis):
    import test_kernels  # noqa: F401  (registers test_s_s2 and test_s_s2_state)

    x = np.random.default_rng(3).normal(size=(9, 4, 6))
    got = packlab.mapreduce(ident, da.from_array(x, chunks=(4, 3, 6)), reduce=name, axis=axis,
                            device="gpu").compute()
    np.testing.assert_allclose(got, np.sum(x * x, axis=axis) - np.sum(x, axis=axis), rtol=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the simulator runs Python
def test_gpu_division_by_zero_is_nan_that_skipna_drops():
    t = np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 6.0]])  # column 0 is constant: std 0
    got = packlab.mapreduce(zscore, t, t.mean(0), t.std(0), reduce="mean", axis=0, skipna=True,
                            device="gpu").compute()
    np.testing.assert_allclose(got, [np.nan, 0.0], atol=1e-15)


@packlab.kernel
def zscore(t, clim, std):
    return (t - clim) / std


def test_gpu_histogram_narrow_range_and_float32_edges():
    x = np.array([0.0, 1e-321, 5e-321, 1e-320, 1.0, np.nan, np.inf])
    got = packlab.mapreduce(ident, x, reduce="histogram", bins=4, range=(0, 1e-320), device="gpu")
    np.testing.assert_array_equal(got.compute(), np.histogram(x[np.isfinite(x)], 4, (0, 1e-320))[0])
    y = np.random.default_rng(0).random(500).astype("f4")
    got = packlab.mapreduce(ident, y, reduce="histogram", bins=7, range=(0.1, 0.9), device="gpu")
    np.testing.assert_array_equal(got.compute(), np.histogram(y, 7, (0.1, 0.9))[0])
