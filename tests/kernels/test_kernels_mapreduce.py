"""packlab.mapreduce against NumPy/xarray references: properties over dtypes, NaN,
empty and size-1 arrays, uneven chunks, several axes, broadcasting; xarray in/out;
clear errors; a real TLS LocalCluster where only partials travel."""

from __future__ import annotations

import importlib.util
import itertools
import uuid
import warnings

import dask
import dask.array as da
import distributed
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import packlab
from packlab.errors import PacklabError
from packlab.kernels import cuda, loops
from packlab.kernels.kernel import _REGISTRY

REDUCTIONS = ["sum", "mean", "var", "std", "min", "max", "count"]
PLAIN = {"sum": np.sum, "mean": np.mean, "var": np.var, "std": np.std, "min": np.min, "max": np.max}
NAN = {"sum": np.nansum, "mean": np.nanmean, "var": np.nanvar, "std": np.nanstd,
       "min": np.nanmin, "max": np.nanmax}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@packlab.kernel
def poly(x):
    return x * x + 2 * x


@packlab.kernel
def anomaly(t, clim):
    return (t - clim) ** 2


@packlab.kernel
def ident(x):
    return x


@pytest.fixture(autouse=True)
def _no_leaked_scheduler():
    """Every test (and its fixtures) leaves dask's scheduler setting as it found it: a
    Client left open would make later plain .compute() calls fail."""
    before = dask.config.get("scheduler", None)
    yield
    assert dask.config.get("scheduler", None) == before


def reference(v: np.ndarray, red: str, axis, skipna: bool):
    """What NumPy says (nan-functions when skipna), in float64 for floats."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        nan = skipna and v.dtype.kind == "f"
        if red == "count":  # valid values, as xarray's count(), whatever skipna
            return np.sum(~np.isnan(v), axis=axis) if v.dtype.kind == "f" else np.sum(
                np.ones_like(v, bool), axis=axis)
        w = v.astype(np.float64) if v.dtype.kind == "f" else v
        return (NAN if nan else PLAIN)[red](w, axis=axis)


def assert_matches(got, want, v):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    if want.dtype.kind in "iub" and got.dtype.kind in "iub":
        np.testing.assert_array_equal(got, want)
        return
    finite = np.abs(v[np.isfinite(v)]) if v.dtype.kind == "f" else np.abs(v)
    scale = float(finite.max()) if finite.size else 1.0
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * (scale + 1) ** 2 * max(v.size, 1))


@st.composite
def chunking(draw, n: int):
    if n == 0:
        return (0,)
    cuts = draw(st.lists(st.integers(1, n - 1), unique=True, max_size=3)) if n > 1 else []
    edges = [0, *sorted(cuts), n]
    return tuple(b - a for a, b in itertools.pairwise(edges))


@st.composite
def cases(draw):
    dtype = np.dtype(draw(st.sampled_from(["float64", "float32", "int32", "int64"])))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6))
    elements = (st.floats(-100, 100, width=32) if dtype.kind == "f" else st.integers(-50, 50))
    x = draw(hnp.arrays(dtype, shape, elements=elements))
    if dtype.kind == "f" and draw(st.booleans()):
        x[draw(hnp.arrays(np.bool_, shape))] = np.nan
    chunks = tuple(draw(chunking(n)) for n in shape)
    axis = draw(st.none() | st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1,
                                     max_size=len(shape)).map(lambda a: tuple(sorted(a))))
    return x, chunks, axis, draw(st.sampled_from(REDUCTIONS)), draw(st.booleans())


@SETTINGS
@given(cases())
def test_matches_numpy(case):
    x, chunks, axis, red, skipna = case
    v = poly(x)
    n_reduced = np.prod([x.shape[a] for a in (axis if axis is not None else range(x.ndim))])
    run = lambda: packlab.mapreduce(poly, da.from_array(x, chunks=chunks), reduce=red,  # noqa: E731
                                    axis=axis, skipna=skipna)
    if red in ("min", "max") and n_reduced == 0:
        with pytest.raises(PacklabError, match="over zero elements"):
            run()
        return
    result = run()
    with dask.config.set(scheduler="sync"):
        got = result.compute()
    assert_matches(got, reference(v, red, axis, skipna), v)


def test_min_max_of_nothing_is_an_error():
    with pytest.raises(PacklabError, match="over zero elements"):
        packlab.mapreduce(poly, np.zeros((0, 3)), reduce="max", axis=0)
    assert packlab.mapreduce(poly, np.zeros((3, 0)), reduce="max", axis=0).compute().shape == (0,)


@SETTINGS
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=5),
       st.sampled_from(["sum", "var", "max", "count"]), st.data())
def test_broadcasts_several_inputs_like_numpy(shapes, red, data):
    s1, s2 = shapes.input_shapes
    rng = np.random.default_rng(0)
    t, c = rng.normal(size=s1), rng.normal(size=s2)
    nd = len(shapes.result_shape)
    axis = data.draw(st.none() | st.integers(0, max(nd - 1, 0))) if nd else None
    if red == "max" and np.prod([shapes.result_shape[a] for a in ([axis] if axis is not None
                                                                   else range(nd))]) == 0:
        return
    chunks1 = tuple(max(1, n // 2) for n in s1)
    got = packlab.mapreduce(anomaly, da.from_array(t, chunks=chunks1) if s1 else t, c,
                            reduce=red, axis=axis).compute()
    v = anomaly(t, c)
    assert_matches(got, reference(np.asarray(v, dtype=float), red, axis, False), np.asarray(v))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.floats(-3, 0), st.floats(0.1, 4), st.booleans())
def test_histogram_matches_numpy(bins, lo, width, per_cell):
    x = np.random.default_rng(bins).normal(size=(40, 3))
    x[3, 1] = np.nan
    x[5, 0] = lo + width  # exactly on the last edge: counted, as numpy does
    rng = (lo, lo + width)
    got = packlab.mapreduce(ident, da.from_array(x, chunks=(7, 2)), reduce="histogram", bins=bins,
                            range=rng, axis=0 if per_cell else None).compute()
    finite = [c[~np.isnan(c)] for c in x.T]
    if per_cell:
        want = np.stack([np.histogram(c, bins, rng)[0] for c in finite])
    else:
        want = np.histogram(x[~np.isnan(x)], bins, rng)[0]
    np.testing.assert_array_equal(got, want)


def test_histogram_with_edges():
    x = np.random.default_rng(1).exponential(size=1000)
    edges = [0.0, 0.1, 0.5, 1.0, 3.0, 3.5]
    got = packlab.mapreduce(ident, da.from_array(x, chunks=300), reduce="histogram", bins=edges)
    np.testing.assert_array_equal(got.compute(), np.histogram(x, edges)[0])


def test_variance_is_stable_on_ill_conditioned_data():
    rng = np.random.default_rng(2)
    x = 1e9 + rng.random(200_000)  # spread 1/12, mean 1e9: E[x^2]-E[x]^2 is all rounding
    naive = np.mean(x * x) - np.mean(x) ** 2
    assert abs(naive - np.var(x)) / np.var(x) > 1  # the trap is real
    got = packlab.mapreduce(ident, da.from_array(x, chunks=12_345), reduce="var").compute()
    np.testing.assert_allclose(got, np.var(x), rtol=1e-6)
    # per cell, with cells whose means differ by many orders of magnitude
    cells = x.reshape(-1, 4) + np.array([0.0, 1e6, 1e12, -1e9])
    got = packlab.mapreduce(ident, da.from_array(cells, chunks=(777, 3)), reduce="std", axis=0)
    # reference on contiguous rows: NumPy only sums pairwise along contiguous memory
    np.testing.assert_allclose(got.compute(), np.std(np.ascontiguousarray(cells.T), axis=1), rtol=1e-5)


def test_ddof():
    x = np.arange(10.0)
    np.testing.assert_allclose(packlab.mapreduce(ident, x, reduce="var", ddof=1).compute(),
                               np.var(x, ddof=1))


def test_user_combine():
    x = np.random.default_rng(3).normal(size=(50, 4))

    def maxabs(a, b):
        return max(a, abs(b))

    got = packlab.mapreduce(ident, da.from_array(x, chunks=(9, 3)), reduce=maxabs, identity=0.0,
                            axis=0, split_every=2)
    np.testing.assert_allclose(got.compute(), np.abs(x).max(axis=0))
    ints = np.arange(1, 25).reshape(4, 6)
    got = packlab.mapreduce(ident, da.from_array(ints, chunks=2), reduce=lambda a, b: a * b,
                            identity=1).compute()
    assert got == np.prod(ints.astype(np.int64))


def test_custom_by_name_is_the_same_as_a_combine_function():
    x = np.random.default_rng(9).normal(size=(30, 4))

    def maxabs(a, b):
        return max(a, abs(b))

    by_name = packlab.mapreduce(ident, da.from_array(x, chunks=(7, 2)), reduce="custom",
                                combine=maxabs, identity=0.0, axis=0)
    by_func = packlab.mapreduce(ident, da.from_array(x, chunks=(7, 2)), reduce=maxabs,
                                identity=0.0, axis=0)
    np.testing.assert_allclose(by_name.compute(), np.abs(x).max(axis=0))
    np.testing.assert_array_equal(by_name.compute(), by_func.compute())


def test_many_results_in_one_compute_are_each_right():
    """Results that differ only in a parameter (histogram range or edges, ddof, a
    combine's identity, the kernel) must not share graph layers."""
    x = np.random.default_rng(10).normal(size=(60, 3)) - 0.5
    d = da.from_array(x, chunks=(13, 2))
    same_name = [lambda v: v, lambda v: 2 * v]  # two kernels both called "<lambda>"

    def biggest(a, b):
        return max(a, b)

    def add(a, b):
        return a + b

    hist = [((4, (-2, 2)), np.histogram(x, 4, (-2, 2))[0]),
            ((4, (0, 1)), np.histogram(x, 4, (0, 1))[0]),
            ((8, (0, 1)), np.histogram(x, 8, (0, 1))[0]),
            (([-3.0, 0.0, 3.0], None), np.histogram(x, [-3.0, 0.0, 3.0])[0]),
            (([-3.0, -1.0, 3.0], None), np.histogram(x, [-3.0, -1.0, 3.0])[0])]
    results = [packlab.mapreduce(ident, d, reduce="histogram", bins=b, range=r)
               for (b, r), _ in hist]
    wants = [w for _, w in hist]
    for ddof in (0, 1, 5):
        results.append(packlab.mapreduce(ident, d, reduce="var", ddof=ddof, axis=0))
        wants.append(np.var(x, ddof=ddof, axis=0))
    for identity in (0.0, -np.inf):
        results.append(packlab.mapreduce(ident, d, reduce=biggest, identity=identity, axis=0))
        wants.append(np.maximum(x.max(axis=0), identity))
    for combine, identity in ((biggest, 0.0), (add, 0.0), (add, 0)):
        results.append(packlab.mapreduce(ident, d, reduce="custom", combine=combine,
                                         identity=identity))
        wants.append(max(x.max(), 0.0) if combine is biggest else x.sum())
    for k, scale in zip(same_name, (1, 2), strict=True):
        results.append(packlab.mapreduce(k, d, reduce="mean"))
        wants.append(scale * x.mean())
    results.append(packlab.mapreduce(ident, d, reduce="mean", skipna=True))
    wants.append(np.nanmean(x))
    got = dask.compute(*results)
    for g, w in zip(got, wants, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12)


def test_many_results_in_one_dataset_are_each_right():
    t = _field()

    def hist(lo, hi):  # bin coordinates differ between ranges: keep only the counts
        h = packlab.mapreduce(ident, t, reduce="histogram", bins=5, range=(lo, hi), dim="time")
        return h.drop_vars(["bin", "bin_lo", "bin_hi"])

    ds = xr.Dataset({
        "h_low": hist(265, 280),
        "h_high": hist(280, 295),
        "var0": packlab.mapreduce(ident, t, reduce="var", dim="time"),
        "var1": packlab.mapreduce(ident, t, reduce="var", ddof=1, dim="time"),
    }).compute()
    v = t.compute().transpose("lat", "lon", "time").values
    for name, rng in (("h_low", (265, 280)), ("h_high", (280, 295))):
        want = np.apply_along_axis(lambda c, r=rng: np.histogram(c, 5, r)[0], -1, v)
        np.testing.assert_array_equal(ds[name].transpose("lat", "lon", "bin").values, want)
    np.testing.assert_allclose(ds.var0.values, v.var(axis=-1), rtol=1e-9)
    np.testing.assert_allclose(ds.var1.values, v.var(axis=-1, ddof=1), rtol=1e-9)


def test_plain_functions_are_compiled_once():
    def square(x):
        return x * x

    def biggest(a, b):
        return max(a, b)

    x = da.from_array(np.arange(20.0), chunks=5)

    def run():
        a = packlab.mapreduce(square, x, reduce=biggest, identity=0.0)
        b = packlab.mapreduce(square, x, reduce="custom", combine=biggest, identity=0.0)
        return dask.compute(a, b)

    assert run() == (361.0, 361.0)
    k, comb = packlab.kernel(square), packlab.kernel(biggest)
    sizes = (len(_REGISTRY), len(loops._LOOPS))
    compiled = (len(k.cpu.overloads), len(comb.cpu.overloads))
    assert run() == (361.0, 361.0)
    assert packlab.kernel(square) is k and packlab.kernel(biggest) is comb
    assert (len(_REGISTRY), len(loops._LOOPS)) == sizes
    assert (len(k.cpu.overloads), len(comb.cpu.overloads)) == compiled


def test_device_gpu_without_a_cluster_follows_this_machine():
    r = lambda: packlab.mapreduce(poly, np.arange(3.0), device="gpu")  # noqa: E731
    if not cuda.local_gpu():
        with pytest.raises(PacklabError, match="device='gpu' but no CUDA device"):
            r()
    elif importlib.util.find_spec("cupy") is None:
        with pytest.raises(PacklabError, match="needs CuPy"):
            r().compute()
    else:
        assert r().compute() == 11.0


def test_empty_size_one_and_scalar_inputs():
    assert packlab.mapreduce(poly, np.zeros(0)).compute() == 0.0
    assert np.isnan(packlab.mapreduce(poly, np.zeros(0), reduce="mean").compute())
    assert packlab.mapreduce(poly, np.array([3.0]), reduce="max").compute() == 15.0
    assert packlab.mapreduce(poly, 2.0).compute() == 8.0
    assert packlab.mapreduce(anomaly, 5, 2, reduce="count").compute() == 1


def test_split_every_changes_the_tree_not_the_answer():
    x = da.from_array(np.arange(1000.0), chunks=10)
    a = packlab.mapreduce(poly, x, split_every=2)
    b = packlab.mapreduce(poly, x, split_every=32)
    assert len(a.__dask_graph__()) > len(b.__dask_graph__())
    assert a.compute() == b.compute() == reference(poly(np.arange(1000.0)), "sum", None, False)


def test_split_every_per_axis_counts_negative_axes_from_the_end():
    """Dask ignores a split_every key that is not a reduced axis (fan-in 2 then): packlab
    counts -1 as the last axis, so {-1: 3} builds the tree {1: 3} does."""
    x = da.from_array(np.arange(2000.0).reshape(2, 1000), chunks=(2, 10))

    def tasks(split_every):
        return len(packlab.mapreduce(poly, x, axis=1, split_every=split_every).__dask_graph__())

    assert tasks({-1: 3}) == tasks({1: 3}) < tasks({1: 2})
    got = packlab.mapreduce(poly, x, axis=1, split_every={-1: 3}).compute()
    np.testing.assert_allclose(got, poly(np.arange(2000.0).reshape(2, 1000)).sum(axis=1))


def test_chunk_tasks_return_partials_not_the_mapped_array():
    x = da.ones((40, 30), chunks=(10, 10))
    r = packlab.mapreduce(poly, x, reduce="var", axis=0)
    partial = next(layer for name, layer in r.__dask_graph__().layers.items() if "partial" in name)
    outs = dask.get(r.__dask_graph__(), list(partial.get_output_keys()))
    assert all(o.shape == (1, 10) and o.dtype.names == ("n", "mean", "m2") for o in outs)


# -- xarray ------------------------------------------------------------------
def _field(chunked: bool = True):
    rng = np.random.default_rng(4)
    t = xr.DataArray(rng.normal(280, 5, size=(12, 4, 5)), dims=("time", "lat", "lon"),
                     coords={"time": np.arange(12), "lat": np.linspace(-60, 60, 4),
                             "lon": np.arange(0, 360, 72), "label": ("lat", list("abcd"))})
    return t.chunk({"time": 5, "lon": 2}) if chunked else t


def test_xarray_in_xarray_out_with_kept_coords():
    t = _field()
    clim = t.mean("time").transpose("lon", "lat").compute()  # other dim order, NumPy-backed
    out = packlab.mapreduce(anomaly, t, clim, reduce="mean", dim="time")
    assert isinstance(out, xr.DataArray) and out.dims == ("lat", "lon") and out.name == "anomaly_mean"
    assert list(out.coords) == ["lat", "lon", "label"] or set(out.coords) == {"lat", "lon", "label"}
    xr.testing.assert_allclose(out.compute(), ((t - clim) ** 2).mean("time").compute())
    both = packlab.mapreduce(ident, t, reduce="max", dim=["time", "lon"])
    xr.testing.assert_allclose(both.compute(), t.max(["time", "lon"]).compute())


def test_xarray_histogram_has_bin_coords():
    t = _field()
    h = packlab.mapreduce(ident, t, reduce="histogram", bins=4, range=(270, 290), dim="time")
    assert h.dims == ("lat", "lon", "bin")
    np.testing.assert_allclose(h.bin_lo, [270, 275, 280, 285])
    assert int(h.sum()) == int(((t >= 270) & (t <= 290)).sum())


def test_xarray_scalar_and_axis():
    t = _field(chunked=False)
    out = packlab.mapreduce(anomaly, t, 280.0, reduce="sum", axis=0)
    assert out.dims == ("lat", "lon")
    xr.testing.assert_allclose(out.compute(), ((t - 280.0) ** 2).sum("time"))


# -- errors --------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: packlab.mapreduce(poly, np.array(["a"])), "dtype <U1, which is invalid"),
    (lambda: packlab.mapreduce(anomaly, np.zeros((3, 2)), np.zeros(3)), "do not broadcast"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce="median"), "reduce='median' is unknown"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), axis=1), "axis=1 is invalid.*1 dimension"),
    (lambda: packlab.mapreduce(poly, _field(), dim="depth"), "dim='depth' does not exist"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), dim="x"), "needs DataArray inputs"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), axis=0, dim="x"), "both given"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), device="tpu"), "device='tpu' is invalid"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce="histogram"), "bins=None is invalid"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce="histogram", bins=3), "range=None"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce="sum", bins=3), "bins=3 is not an option"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), axis=0.5), r"axis=0.5 is invalid.*whole numbers"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), axis=True), "axis=True is invalid"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce="histogram", bins=0, range=(0, 1)),
     "bins=0 is invalid: expected a whole number of at least 1"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce="histogram", bins=2.5, range=(0, 1)),
     "bins=2.5 is invalid"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce="var", ddof=-1),
     "ddof=-1 is invalid: expected a whole number, 0 or more"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce="std", ddof=True), "ddof=True is invalid"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce=max), "identity=None is invalid"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce="custom"), "combine=None is invalid"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce="custom", combine=lambda a, b: a + b),
     "identity=None is invalid"),
    (lambda: packlab.mapreduce(poly, np.zeros(3), reduce=lambda a, b: a + b,
                               combine=lambda a, b: a * b, identity=0), "combine=<function .* was given too"),
    (lambda: packlab.mapreduce(poly), "got no arrays"),
    (lambda: packlab.mapreduce(anomaly, np.zeros(3)), "takes 2 argument"),
    (lambda: packlab.mapreduce(poly, _field(), _field().isel(lat=slice(1, None))), "coordinates"),
])
def test_bad_input_is_a_clear_error(call, match):
    with pytest.raises(PacklabError, match=match):
        call()


def test_uncompilable_kernel_error_names_kernel_types_reason():
    @packlab.kernel
    def needs_str(x):
        return x + "1"

    with pytest.raises(PacklabError) as e:
        packlab.mapreduce(needs_str, da.zeros(4, dtype=np.int32, chunks=2))
    msg = str(e.value)
    assert "'needs_str'" in msg and "(int32)" in msg and "add(int32, Literal[str]" in msg


# -- on a real cluster ------------------------------------------------------------
def test_on_local_cluster_only_partials_travel(local_cluster):
    client = local_cluster.client
    x = client.persist(da.random.default_rng(5).random((400, 5000), chunks=(50, 5000)))
    nbytes = x.nbytes

    def sent(dask_worker):
        return sum(t.get("total", 0) for t in dask_worker.transfer_outgoing_log)

    want = np.var(poly(x.compute()), axis=0)
    before = sum(client.run(sent).values())
    out = packlab.mapreduce(poly, x, reduce="var", axis=0).compute()
    moved = sum(client.run(sent).values()) - before
    np.testing.assert_allclose(out, want, rtol=1e-9)
    assert moved < nbytes / 8, f"{moved} bytes moved between workers for {nbytes} bytes of data"


def test_device_auto_is_cpu_and_gpu_is_refused_on_a_cpu_cluster(local_cluster):
    from packlab.kernels.cuda import resolve_device

    local_cluster.client  # noqa: B018 - make it the default client
    assert resolve_device("auto") is False
    with pytest.raises(PacklabError, match="no worker with the 'GPU' resource"):
        packlab.mapreduce(poly, np.zeros(3), device="gpu")


def test_persisted_data_are_reduced_by_one_task_per_worker_thread(local_cluster):
    client = local_cluster.client
    t = client.persist(da.random.default_rng(6).normal(size=(60, 8, 10), chunks=(5, 4, 10)))
    distributed.wait(t)  # in worker memory: packlab asks the scheduler where each chunk is
    clim = np.linspace(0, 1, 10)
    r = packlab.mapreduce(anomaly, t, clim, reduce="var", axis=0)
    layers = r.__dask_graph__().layers
    groups = [layer for name, layer in layers.items() if name.startswith("group-partial")]
    assert groups, list(layers)
    threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
    assert len(groups[0]) <= 2 * threads < t.npartitions  # 2 kept blocks, 24 chunks
    np.testing.assert_allclose(r.compute(), np.var(anomaly(t.compute(), clim), axis=0), rtol=1e-9)


def test_data_not_yet_on_the_cluster_keep_one_task_per_chunk(local_cluster):
    local_cluster.client  # noqa: B018 - make it the default client
    x = da.random.default_rng(7).random((60, 10), chunks=(5, 10))
    r = packlab.mapreduce(poly, x, reduce="mean")
    assert not any(name.startswith("group-partial") for name in r.__dask_graph__().layers)
    np.testing.assert_allclose(r.compute(), np.mean(poly(x.compute())))


@pytest.mark.slurm
def test_on_slurm_workers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(backend="slurm", workers=2, cores=1, memory="1GiB", wait=True,
                            job_name=f"packlab-kernels-{uuid.uuid4().hex[:6]}")
    with pc:
        x = pc.client.persist(da.random.default_rng(8).random((80, 500), chunks=(10, 500)))
        distributed.wait(x)
        want = np.std(poly(x.compute()), axis=0)
        got = packlab.mapreduce(poly, x, reduce="std", axis=0).compute()
    np.testing.assert_allclose(got, want, rtol=1e-9)


def _runs_on_a_worker() -> bool:
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def test_active_client_is_the_client_that_compute_uses():
    """placement.active_client (public Dask API only) agrees with where .compute() runs, for
    every way of choosing a scheduler; with another scheduler set the client is ignored."""
    from packlab.kernels.locality import active_client

    task = dask.delayed(_runs_on_a_worker)()
    assert active_client() is None and not task.compute()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as lc, distributed.Client(lc) as client:
        assert active_client() is client and task.compute()
        for scheduler in ("sync", "threads", "dask.distributed", client, client.get):
            with dask.config.set(scheduler=scheduler):
                assert (active_client() is client) is task.compute(), scheduler
                assert active_client() in (None, client)


@pytest.mark.parametrize(("split_every", "direct"), [(None, True), (4, True), (2, False), ({0: 4}, True),
                                                   ({-2: 2, 1: 8}, False)])
def test_group_partials_go_straight_to_one_final_task_unless_the_fan_in_is_smaller(split_every, direct):
    """Three worker threads make three groups: with a fan-in of at least 3 one task per
    kept block folds and finalizes them; with split_every=2 Dask's tree combines them."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=3, processes=False,
                                  dashboard_address=None) as lc, distributed.Client(lc) as client:
        x = client.persist(da.random.default_rng(9).normal(size=(48, 6), chunks=(4, 3)))
        distributed.wait(x)
        ref = x.compute()
        for reduce, want, opts in [
            ("var", np.var(poly(ref), axis=0), {}),
            ("histogram", np.stack([np.histogram(c, bins=5, range=(-1, 10))[0] for c in poly(ref).T]),
             {"bins": 5, "range": (-1, 10)}),
        ]:
            r = packlab.mapreduce(poly, x, reduce=reduce, axis=0, split_every=split_every, **opts)
            names = list(r.__dask_graph__().layers)
            assert any(n.startswith("group-partial") for n in names), names
            assert any(n.startswith("combine-groups") for n in names) is direct, names
            assert r.numblocks[0] == 2  # the kept axis keeps its two blocks
            np.testing.assert_allclose(r.compute(), want, rtol=1e-9)
        total = packlab.mapreduce(poly, x, split_every=split_every)
        assert total.shape == ()
        np.testing.assert_allclose(total.compute(), poly(ref).sum(), rtol=1e-9)


# -- NumPy's arithmetic and dtypes ----------------------------------------------------
@packlab.kernel
def zscore(t, clim, std):
    return (t - clim) / std


@packlab.kernel
def ratio(a, b):
    return a / b


@packlab.kernel
def floordiv(a, b):
    return a // b


@packlab.kernel
def modulo(a, b):
    return a % b


def test_division_by_zero_is_inf_or_nan_as_numpy():
    """No ZeroDivisionError out of the fused loop: 1/0 is inf, 0/0 NaN, x // 0 and x % 0
    of integers 0, as NumPy and the kernel called on NumPy arrays give."""
    a, b = np.array([1.0, 0.0, -1.0, 2.0]), np.array([0.0, 0.0, 0.0, 4.0])
    with np.errstate(all="ignore"):
        for kern in (ratio, floordiv, modulo):
            for x, y in ((a, b), (a.astype(int), b.astype(int))):
                want = kern.py_func(x, y)  # NumPy's answer, elementwise
                np.testing.assert_array_equal(kern(x, y), want)
                for red, ref in (("max", np.max), ("min", np.min), ("sum", np.sum)):
                    got = packlab.mapreduce(kern, da.from_array(x, chunks=2), y, reduce=red).compute()
                    np.testing.assert_array_equal(got, ref(want))
        got = packlab.mapreduce(ratio, a, b, reduce="sum", skipna=True).compute()
        np.testing.assert_array_equal(got, np.nansum(a / b))


def test_zscore_over_a_constant_cell_is_nan_that_skipna_drops():
    t = xr.DataArray(np.array([[1.0, 2.0, 5.0], [1.0, 4.0, 5.0], [1.0, 6.0, 5.0]]), dims=("time", "cell"))
    clim, std = t.mean("time"), t.std("time")  # cells 0 and 2 are constant: std 0
    with np.errstate(all="ignore"):
        z = (t - clim) / std
    for red in ("mean", "var", "max", "sum", "count"):
        got = packlab.mapreduce(zscore, t, clim, std, reduce=red, dim="time", skipna=True).compute()
        want = z.count("time") if red == "count" else getattr(z, red)("time", skipna=True)
        np.testing.assert_allclose(got.values, want.values, equal_nan=True, atol=1e-12)
    plain = packlab.mapreduce(zscore, t, clim, std, reduce="mean", dim="time").compute()
    assert np.isnan(plain.values[[0, 2]]).all() and plain.values[1] == pytest.approx(0.0)


@pytest.mark.parametrize("red", REDUCTIONS)
def test_big_endian_data_simply_work(red):
    x = np.random.default_rng(0).normal(size=(6, 5))
    x[1, 1] = np.nan
    big = x.astype(">f8")
    for data in (big, da.from_array(big, chunks=(4, 5)), xr.DataArray(big, dims=("a", "b"))):
        where = {"dim": "a"} if isinstance(data, xr.DataArray) else {"axis": 0}
        got = packlab.mapreduce(ident, data, reduce=red, skipna=True, **where)
        np.testing.assert_allclose(np.asarray(got.compute()), reference(x, red, 0, True), rtol=1e-12)
    np.testing.assert_array_equal(poly(big), poly(x))


def test_float16_is_computed_in_float32():
    x = (np.arange(12) / 7).astype("f2")
    got = packlab.mapreduce(ident, x, reduce="sum").compute()
    assert got.dtype == np.float32 and got == np.sum(x.astype("f4"))
    assert ident(x).dtype == np.float32
    h = packlab.mapreduce(ident, x, reduce="histogram", bins=5, range=(0, 1)).compute()
    np.testing.assert_array_equal(h, np.histogram(x.astype("f4"), bins=5, range=(0, 1))[0])


def test_count_of_a_boolean_kernel_warns_and_sum_counts_where_it_holds():
    @packlab.kernel
    def hot(t):
        return t > 2.0

    t = np.arange(5.0)
    assert int(packlab.mapreduce(hot, t, reduce="sum").compute()) == 2
    with pytest.warns(packlab.PacklabWarning, match="reduce='sum'"):
        n = packlab.mapreduce(hot, t, reduce="count")
    assert int(n.compute()) == 5
