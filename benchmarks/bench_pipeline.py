"""Pipelines: resume against a first run, zarr checkpoints against raw writes, per-stage
overhead against dask.delayed, building and validating a large DAG.

    python -m benchmarks pipeline           # 20 stages; 1 GiB zarr; 1,000 stages; 10,000-stage DAG
    python -m benchmarks pipeline --quick   # 20 stages; 128 MiB; 200 stages; 2,000-stage DAG

* Resume: a 20-stage chain whose stages each work 0.1 s, run once, then again with
  ``resume=True`` (every checkpoint verified: manifest, sizes and CRC-32 of every file).
* Checkpoint: an xarray Dataset of random float64 (incompressible: zarr's default
  compressor gains nothing) written with ``CheckpointStore.write`` (zarr, then checksum and
  fsync of every file, manifest, rename) against the same bytes written to one file with
  plain ``write`` calls and one fsync, in the same directory, in the same run.
* Overhead: a chain of trivial stages through the pipeline (a queue job, a checkpoint with
  fsync per stage) against the same functions as a chain of ``dask.delayed`` calls on the
  same cluster; the difference per stage.
* DAG: declaring N stages (each reading one or two earlier ones), validating the graph and
  computing every cache key.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings

import numpy as np

import packlab
from packlab.pipeline import CheckpointStore

from .table import Row

WORK = 0.1  # seconds of work per stage in the resume benchmark


def _step(i: int, work: float):
    """Stage ``i`` of a chain: it receives stage ``i - 1``'s result through a parameter of
    that name (how stages are wired), so each is its own small function."""
    ns: dict = {"time": time}
    arg = f"s{i - 1}" if i else "start=0"
    prev = f"s{i - 1}" if i else "start"
    body = f"    if work:\n        time.sleep(work)\n    return {prev} + 1"
    exec(f"def step({arg}, work={work!r}):\n{body}", ns)
    return ns["step"]


def _chain(name: str, root: str, n: int, work: float) -> packlab.Pipeline:
    pipe = packlab.Pipeline(name, checkpoint=root, retry=False)
    for i in range(n):
        pipe.stage(name=f"s{i}")(_step(i, work))
    return pipe


def resume(pc, root: str, n: int = 20) -> list[Row]:
    g = f"resume a completed {n}-stage pipeline ({WORK:.1f} s of work per stage)"
    pipe = _chain("resume", os.path.join(root, "resume"), n, WORK)
    t0 = time.perf_counter()
    first = pipe.run(pc)
    t_first = time.perf_counter() - t0
    assert first.ok and first[f"s{n - 1}"].result == n
    t0 = time.perf_counter()
    again = pipe.run(pc)
    t_resume = time.perf_counter() - t0
    assert again.cached == pipe.stages
    return [Row(g, "first run", t_first, "s", baseline=True, higher_is_better=False),
            Row(g, "resume=True", t_resume, "s", higher_is_better=False,
                note=f"{100 * t_resume / t_first:.2f} % of the first run (target <= 5 %)")]


def checkpoint(root: str, nbytes: int) -> list[Row]:
    import xarray as xr

    g = f"write {nbytes / 2**30:.3g} GiB of float64 (xarray Dataset) to disk"
    n = nbytes // 8
    side = 1024
    data = np.random.default_rng(0).random((n // side, side))
    ds = xr.Dataset({"x": (("t", "c"), data)})
    raw = os.path.join(root, "raw.bin")
    buf = memoryview(data).cast("B")
    t0 = time.perf_counter()
    with open(raw, "wb") as f:
        for off in range(0, len(buf), 1 << 24):
            f.write(buf[off:off + (1 << 24)])
        f.flush()
        os.fsync(f.fileno())
    t_raw = time.perf_counter() - t0
    os.remove(raw)
    store = CheckpointStore(os.path.join(root, "ckpt"), "bench")
    t0 = time.perf_counter()
    w = store.write("big", "k", ds.chunk({"t": max(1, (n // side) // 16)}))
    t_ckpt = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert store.check("big", "k") is None
    t_check = time.perf_counter() - t0
    algorithm = store.manifest("big", "k")["checksum"]
    shutil.rmtree(os.path.join(root, "ckpt"))
    gb = nbytes / 1e9
    return [Row(g, "raw write + fsync", gb / t_raw, "GB/s", baseline=True),
            Row(g, "zarr checkpoint", gb / t_ckpt, "GB/s",
                note=f"{100 * t_raw / t_ckpt:.0f} % of raw (target >= 50 %); {w.files} files, "
                     f"{w.nbytes / 1e9:.2f} GB"),
            Row(g, f"verify on read ({algorithm})", gb / t_check, "GB/s", note="page cache warm")]


def overhead(pc, root: str, n: int) -> list[Row]:
    import dask

    g = f"chain of {n} trivial stages"
    pipe = _chain("overhead", os.path.join(root, "overhead"), n, 0.0)

    fns = [_step(i, 0.0) for i in range(n)]  # the same functions
    t0 = time.perf_counter()
    x = dask.delayed(fns[0])()
    for f in fns[1:]:
        x = dask.delayed(f)(x)
    assert pc.client.compute(x).result() == n
    t_delayed = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = pipe.run(pc)
    t_pipe = time.perf_counter() - t0
    assert run.ok and run[f"s{n - 1}"].result == n
    per = (t_pipe - t_delayed) / n
    return [Row(g, "dask.delayed", t_delayed, "s", baseline=True, higher_is_better=False),
            Row(g, "packlab Pipeline", t_pipe, "s", higher_is_better=False,
                note=f"{t_pipe / t_delayed:.1f}x delayed; {1000 * per:.1f} ms more per stage "
                     "(queue job + fsynced checkpoint each)")]


def build(n: int) -> list[Row]:
    g = f"declare and validate a {n}-stage DAG"

    def make(i: int):
        a, b = f"s{i - 1}", f"s{max(0, i // 2 - 1)}"
        ns: dict = {}
        if i == 0:
            exec("def f(k=0):\n    return k", ns)
        elif a == b or i == 1:
            exec(f"def f({a}):\n    return {a}", ns)
        else:
            exec(f"def f({a}, {b}):\n    return {a} + {b}", ns)
        return ns["f"]

    fns = [make(i) for i in range(n)]  # making the functions is the user's code, not timed
    t0 = time.perf_counter()
    pipe = packlab.Pipeline("big", checkpoint=tempfile.mkdtemp())
    for i, f in enumerate(fns):
        pipe.stage(name=f"s{i}")(f)
    t_declare = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = pipe.validate()
    t_validate = time.perf_counter() - t0
    t0 = time.perf_counter()
    keys = pipe.keys()
    t_keys = time.perf_counter() - t0
    assert len(graph.order) == n and len(keys) == n
    return [Row(g, "declare (@pipe.stage)", t_declare, "s", baseline=True, higher_is_better=False),
            Row(g, "validate (bind, cycles, order)", t_validate, "s", higher_is_better=False),
            Row(g, "cache keys of every stage", t_keys, "s", higher_is_better=False,
                note=f"total {t_declare + t_validate + t_keys:.2f} s")]


def run(quick: bool = False) -> list[Row]:
    warnings.simplefilter("ignore", packlab.PacklabWarning)
    rows: list[Row] = []
    root = tempfile.mkdtemp(prefix="bench-pipeline-", dir=os.environ.get("PACKLAB_BENCH_DIR"))
    try:
        rows += build(2_000 if quick else 10_000)
        rows += checkpoint(root, (128 if quick else 1024) * 2**20)
        with packlab.launch(workers=2, cores=1, memory="2GiB", wait=True) as pc:
            rows += resume(pc, root)
            rows += overhead(pc, root, 200 if quick else 1_000)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows
