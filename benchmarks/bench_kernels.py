"""Map-reduce kernels: packlab.mapreduce beside plain dask, xarray and the machine's ceiling.

Workload A: ``sum(x*x + 2x)`` over float64, 24 and 48 chunks of 128 MiB (3.22 and 6.44
GB; 64 MB with ``--quick``): the smaller shows what the fixed latency of one Dask
compute (tens of ms on a process cluster) costs against a ~0.1 s pass. Workload B:
per-cell variance over time of a 3-D (time, lat, lon) DataArray. Data are generated on
the workers and persisted before timing (the notes say how the chunks were spread); each
figure is the input bytes divided by the best of 5 wall times of the reduction alone,
after one warm-up run (which is where numba compiles, once per worker process). The
ceiling is a numba ``prange`` pass over one in-memory NumPy array of the same size on
all cores: the memory bandwidth. For workload A every run alternates with a ceiling run,
and each row's note gives its ratio to the ceiling measured beside it (the table's ratio
is to the best ceiling run of all, the stricter figure).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import Counter

import dask
import dask.array as da
import distributed
import numba
import numpy as np
import psutil
import xarray as xr

import packlab

from .table import Row, best_of

CHUNK = 2**24  # elements per chunk: 128 MiB of float64


@packlab.kernel
def poly(x):
    return x * x + 2 * x


@packlab.kernel
def ident(x):
    return x


@numba.njit(parallel=True, fastmath=True)
def _ceiling_pass(a):
    acc = 0.0
    for i in numba.prange(a.shape[0]):
        acc += a[i] * a[i] + 2 * a[i]
    return acc


@numba.njit(nogil=True, fastmath=True)
def _numba_block_sum(a):
    acc = 0.0
    for i in range(a.shape[0]):
        acc += a[i] * a[i] + 2 * a[i]
    return acc


def _naive(x: da.Array) -> da.Array:
    """The obvious hand-written version: a numba reduction per block, one task per chunk."""
    return x.map_blocks(lambda b: np.array([_numba_block_sum(b)]), chunks=((1,) * x.numblocks[0],)).sum()


def _gbps(nbytes: int, fn, repeat: int = 5) -> float:
    fn()  # warm-up: compile on every worker, fault pages in
    return nbytes / best_of(fn, repeat) / 1e9


def _paired(nbytes: int, fn, ceiling, repeat: int = 5) -> tuple[float, float]:
    """Best GB/s of ``fn`` and of the ceiling, run alternately: on a shared machine the
    load drifts, and a ratio of neighbours is fairer than one of distant runs."""
    fn()
    best_fn = best_ceiling = float("inf")
    for _ in range(repeat):
        best_fn = min(best_fn, best_of(fn, 1))
        best_ceiling = min(best_ceiling, best_of(ceiling, 1))
    return nbytes / best_fn / 1e9, nbytes / best_ceiling / 1e9


def _sum_rows(n: int, chunk: int, group: str) -> list[Row]:
    nbytes = n * 8
    a = np.random.default_rng(0).random(n)
    ref = float(_ceiling_pass(a))
    ceilings: list[float] = []
    rows: list[Row] = []

    def row(name: str, fn, note: str) -> None:
        gbps, ceiling = _paired(nbytes, fn, lambda: _ceiling_pass(a))
        ceilings.append(ceiling)
        rows.append(Row(group, name, gbps, "GB/s", note=f"{gbps / ceiling:.2f} x ceiling beside it; {note}"))

    with dask.config.set(scheduler="threads"):
        x = da.random.default_rng(0).random(n, chunks=chunk).persist()
        res = packlab.mapreduce(poly, x)
        _check(float(res.compute()), float((x * x + 2 * x).sum().compute()))
        note = f"threads, {os.cpu_count()} workers, chunk {chunk * 8 >> 20} MiB"
        row("packlab.mapreduce (threads)", res.compute, note)
        row("dask (x**2 + 2*x).sum() (threads)", (x**2 + 2 * x).sum().compute, note)
        xa = xr.DataArray(x, dims=("i",))
        row("xarray (x**2 + 2*x).sum() (threads)", (xa**2 + 2 * xa).sum().compute, note)
        row("map_blocks(numba block sum).sum() (threads)", _naive(x).compute, note)
        del x, xa, res

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=2, cores=1, memory=f"{max(2, nbytes // 2**30 + 2)}GiB", wait=True)
    with pc:
        client = pc.client
        x = client.persist(da.random.default_rng(0).random(n, chunks=chunk))
        distributed.wait(x)  # on the workers before timing
        res = packlab.mapreduce(poly, x)
        _check(float(res.compute()), ref, rtol=1e-2)  # same size, other random draws
        held = Counter(ws[0] for ws in client.who_has(x).values() if ws)
        split = "+".join(str(k) for k in sorted(held.values(), reverse=True))
        note = (f"process LocalCluster 2 workers x 1 thread (TLS), chunk {chunk * 8 >> 20} MiB, "
                f"{split} chunks per worker")
        row("packlab.mapreduce (processes)", res.compute, note)
        row("map_blocks(numba block sum).sum() (processes)", _naive(x).compute, note)
        row("dask (x**2 + 2*x).sum() (processes)", (x**2 + 2 * x).sum().compute, note)
        del x, res
    rows.insert(0, Row(group, "ceiling: numba prange, one in-memory array", max(ceilings), "GB/s",
                       baseline=True, note=f"{numba.get_num_threads()} threads, best of all its runs"))
    return rows


def _var_rows(shape: tuple[int, int, int], group: str) -> list[Row]:
    nbytes = int(np.prod(shape)) * 8
    chunks = (min(shape[0], max(1, CHUNK // (shape[1] * shape[2]))), shape[1], shape[2])
    rows = []

    def field():
        return xr.DataArray(da.random.default_rng(1).random(shape, chunks=chunks) * 30 + 270,
                            dims=("time", "lat", "lon"), name="t")

    with dask.config.set(scheduler="threads"):
        t = field().persist()
        res = packlab.mapreduce(ident, t, reduce="var", dim="time")
        want = float(t.var("time").values[0, 0])
        _check(res.values[0, 0], want)
        note = f"threads, chunk {chunks}"
        rows.append(Row(group, "xarray t.var('time') (threads)", _gbps(nbytes, t.var("time").compute),
                        "GB/s", baseline=True, note=note))
        rows.append(Row(group, "dask t.data.var(axis=0) (threads)",
                        _gbps(nbytes, t.data.var(axis=0).compute), "GB/s", note=note))
        rows.append(Row(group, "packlab.mapreduce var, dim='time' (threads)",
                        _gbps(nbytes, res.compute), "GB/s", note=note))
        del t, res
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=2, cores=1, memory=f"{max(2, nbytes // 2**30 + 2)}GiB", wait=True)
    with pc:
        t = field().persist()
        distributed.wait(t)
        res = packlab.mapreduce(ident, t, reduce="var", dim="time")
        _check(res.values[0, 0], want)
        note = f"process LocalCluster 2 workers x 1 thread (TLS), chunk {chunks}"
        rows.append(Row(group, "packlab.mapreduce var, dim='time' (processes)",
                        _gbps(nbytes, res.compute), "GB/s", note=note))
        rows.append(Row(group, "xarray t.var('time') (processes)", _gbps(nbytes, t.var("time").compute),
                        "GB/s", note=note))
    return rows


def _gpu_rows(n: int, group: str) -> list[Row]:
    from packlab.kernels.cuda import local_gpu, simulator

    try:
        import cupy
    except ImportError:
        cupy = None
    if cupy is None or simulator() or not local_gpu():
        reason = "no CuPy" if cupy is None else "simulator" if simulator() else "no CUDA device"
        print(f"bench_kernels: GPU rows SKIPPED ({reason})", file=sys.stderr)
        return [Row(group, "GPU rows skipped", 0.0, "GB/s", baseline=True, note=f"skipped: {reason}")]
    a = cupy.random.random(n)
    b = cupy.empty_like(a)

    def copy():
        b[...] = a
        cupy.cuda.Device().synchronize()

    copy_bw = 2 * a.nbytes / best_of(copy, 5) / 1e9  # read + write
    chunk = max(1, n // 8)
    with dask.config.set(scheduler="threads"):
        x = da.from_array(a, chunks=chunk, asarray=False)
        res = packlab.mapreduce(poly, x, device="gpu")
        _check(float(res.compute()), float((a * a + 2 * a).sum()))
        gbps = _gbps(a.nbytes, res.compute)
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return [Row(group, "device copy bandwidth (CuPy b[...] = a)", copy_bw, "GB/s", baseline=True, note=name),
            Row(group, "packlab.mapreduce device='gpu' (threads)", gbps, "GB/s",
                note=f"chunk {chunk * 8 >> 20} MiB")]


def _check(got: float, want: float, rtol: float = 1e-9) -> None:
    if not np.isclose(got, want, rtol=rtol):
        raise AssertionError(f"benchmark result {got!r} differs from the reference {want!r}")


def run(quick: bool = False) -> list[Row]:
    chunk = 2**20 if quick else CHUNK
    # 24 and 48 chunks: both >= 3 GB; the smaller shows the fixed cost of a Dask compute
    sizes = [2**23] if quick else [24 * CHUNK, 48 * CHUNK]
    rows: list[Row] = []
    for n in sizes:
        gb = f"{n * 8 / 1e9:.2f} GB"
        group = f"sum(x*x + 2x) over {gb} float64"
        free = psutil.virtual_memory().available
        if 2.5 * n * 8 > free:  # the ceiling's array plus the persisted copy, and headroom
            print(f"bench_kernels: {gb} rows SKIPPED (needs {2.5 * n * 8 / 1e9:.0f} GB free, "
                  f"{free / 1e9:.0f} GB are)", file=sys.stderr)
            rows.append(Row(group, "skipped: not enough memory", 0.0, "GB/s", baseline=True))
            continue
        rows += _sum_rows(n, chunk, group)
    shape = (64, 128, 128) if quick else (2048, 256, 384)
    rows += _var_rows(shape, f"per-cell variance over time, {shape} float64 DataArray")
    rows += _gpu_rows(sizes[0], f"GPU: sum(x*x + 2x) over {sizes[0] * 8 / 1e9:.2f} GB float64")
    return rows
