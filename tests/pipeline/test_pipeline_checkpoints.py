"""The checkpoint store alone, on real files: each format round-trips, every kind of damage
is caught by the manifest, a crashed write leaves nothing that could be used, and the
cache keys follow code, constants and upstream keys."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from packlab.pipeline import CheckpointStore, Format, register_format, unregister_format
from packlab.pipeline.keys import code_token, stage_key


@pytest.fixture
def store(tmp_path):
    return CheckpointStore(str(tmp_path), "p")


def test_pickle_round_trip_and_manifest_lists_every_file(store):
    w = store.write("s", "k", {"a": np.arange(3)}, {"seconds": 1.5})
    assert w.format == "pickle" and w.files == 1
    m = store.manifest("s", "k")
    assert m["stage"] == "s" and m["key"] == "k" and m["pipeline"] == "p" and m["meta"]["seconds"] == 1.5
    assert set(m["files"]) == {"data.pkl"} and m["type"] == "builtins.dict"
    np.testing.assert_array_equal(store.read("s", "k")["a"], np.arange(3))
    assert os.listdir(os.path.join(store.root, "tmp")) == []  # nothing left behind


def test_zarr_round_trips_datasets_dataarrays_and_dask_arrays_lazily(store):
    pytest.importorskip("zarr")
    import dask.array as da
    import xarray as xr

    ds = xr.Dataset({"v": (("x",), da.arange(10.0, chunks=4))}, coords={"x": np.arange(10)}, attrs={"u": "K"})
    assert store.write("ds", "k", ds).format == "zarr"
    back = store.read("ds", "k")
    assert back.v.chunks is not None and back.attrs == {"u": "K"}
    xr.testing.assert_identical(back.compute(), ds.compute())
    named = xr.DataArray(np.ones((2, 3)), dims=("a", "b"), name="ones")
    store.write("named", "k", named)
    xr.testing.assert_identical(store.read("named", "k").compute(), named)
    unnamed = xr.DataArray(np.zeros(4), dims="t")
    store.write("unnamed", "k", unnamed)
    assert store.read("unnamed", "k").name is None
    arr = da.random.default_rng(0).random((20, 20), chunks=7)
    store.write("arr", "k", arr)
    got = store.read("arr", "k")
    assert isinstance(got, da.Array) and got.chunks == arr.chunks
    np.testing.assert_array_equal(got.compute(), arr.compute())


def test_pandas_uses_parquet_when_pyarrow_is_there_else_pickle(store):
    import pandas as pd

    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}, index=[10, 20, 30])
    w = store.write("df", "k", df)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        assert w.format == "pickle"
    else:
        assert w.format == "parquet"
    pd.testing.assert_frame_equal(store.read("df", "k"), df)
    s = pd.Series([1.0, 2.0], name="v")
    store.write("series", "k", s)
    pd.testing.assert_series_equal(store.read("series", "k"), s)
    odd = pd.DataFrame({0: [1], 1: [2]})  # integer column names: parquet refuses, pickled
    assert store.write("odd", "k", odd).format == "pickle"
    pd.testing.assert_frame_equal(store.read("odd", "k"), odd)


def damaged(store, how):
    store.write("s", "k", list(range(1000)))
    d = store.path("s", "k")
    how(d)
    return store.check("s", "k")


@pytest.mark.parametrize(("how", "reason"), [
    (lambda d: open(os.path.join(d, "data.pkl"), "r+b").truncate(10), "truncated"),
    (lambda d: _flip(os.path.join(d, "data.pkl")), "checksum"),
    (lambda d: os.remove(os.path.join(d, "data.pkl")), "missing"),
    (lambda d: os.remove(os.path.join(d, "manifest.json")), "no manifest"),
    (lambda d: open(os.path.join(d, "manifest.json"), "w").write("{not json"), "unreadable manifest"),
    (lambda d: _edit(d, key="other"), "foreign: manifest key='other'"),
    (lambda d: _edit(d, stage="t"), "foreign: manifest stage='t'"),
    (lambda d: _edit(d, format="hdf9"), "unknown format 'hdf9'"),
    (lambda d: _edit(d, files={"../../etc/passwd": [1, 1]}), "outside the checkpoint"),
    (lambda d: _edit(d, files={}), "lists no files"),
    (lambda d: _edit(d, checksum="md4"), "unknown checksum 'md4'"),
], ids=["truncated", "garbage", "file-removed", "manifest-removed", "manifest-garbage", "foreign-key",
        "foreign-stage", "unknown-format", "path-escape", "no-files", "unknown-checksum"])
def test_every_kind_of_damage_is_detected(store, how, reason):
    got = damaged(store, how)
    assert got is not None and reason in got, got


def _flip(path):
    with open(path, "r+b") as f:
        f.seek(20)
        b = f.read(1)
        f.seek(20)
        f.write(bytes([b[0] ^ 0xFF]))


def _edit(d, **fields):
    p = os.path.join(d, "manifest.json")
    m = json.load(open(p))
    m.update(fields)
    json.dump(m, open(p, "w"))


def test_a_write_that_crashes_leaves_no_checkpoint_and_a_rewrite_replaces_a_damaged_one(store):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(Exception, match="cannot be checkpointed"):
        store.write("s", "k", Boom())
    assert store.check("s", "k") == "missing" and os.listdir(os.path.join(store.root, "tmp")) == []
    store.write("s", "k", 1)
    _flip_manifest = os.path.join(store.path("s", "k"), "data.pkl")
    open(_flip_manifest, "wb").write(b"junk")
    assert store.check("s", "k") is not None
    store.write("s", "k", 2)  # the damaged one is moved aside, the new one renamed in
    assert store.read("s", "k") == 2


def test_a_registered_format_is_used_first_and_checked_like_the_others(store):
    class Text(Format):
        name = "text"

        def accepts(self, obj):
            return isinstance(obj, str)

        def write(self, obj, path):
            open(os.path.join(path, "data.txt"), "w").write(obj)

        def read(self, path):
            return open(os.path.join(path, "data.txt")).read()

    register_format(Text())
    try:
        assert store.write("s", "k", "hello").format == "text" and store.read("s", "k") == "hello"
    finally:
        unregister_format("text")
    assert store.check("s", "k") == "unknown format 'text'"  # a format no longer registered: foreign


def test_keys_follow_code_constants_closures_helpers_and_upstream_keys():
    def helper(x):
        return x + 1

    def f(a):
        return helper(a)

    base = code_token(f)
    assert base == code_token(f)

    def helper(x):  # noqa: F811 - a changed helper: f's key changes
        return x + 2

    def f(a):
        return helper(a)

    assert code_token(f) != base
    k = stage_key("s", "code", {"n": 1}, {"up": "k1"})
    assert k == stage_key("s", "code", {"n": 1}, {"up": "k1"})
    others = [stage_key("s", "code", {"n": 2}, {"up": "k1"}), stage_key("s", "code", {"n": 1}, {"up": "k2"}),
              stage_key("t", "code", {"n": 1}, {"up": "k1"}), stage_key("s", "edoc", {"n": 1}, {"up": "k1"})]
    assert len({k, *others}) == 5

    def closure(n):
        def g():
            return n
        return g

    assert code_token(closure(1)) != code_token(closure(2))
    assert code_token(closure(1)) == code_token(closure(1))


def test_a_big_dask_array_constant_is_keyed_by_its_graph_not_its_values():
    import dask.array as da

    big = da.zeros((10**6, 10**6), chunks=10**4)  # 8 TB if it were hashed (it would never end)
    k = stage_key("s", "c", {"x": big}, {})
    assert k == stage_key("s", "c", {"x": big}, {}) != stage_key("s", "c", {"x": big + 1}, {})


THRESHOLD = 3


def test_a_module_level_constant_the_stage_reads_is_part_of_its_key():
    global THRESHOLD

    def f():
        return THRESHOLD

    before = code_token(f)
    THRESHOLD = 4
    try:
        assert code_token(f) != before
    finally:
        THRESHOLD = 3
    assert code_token(f) == before
