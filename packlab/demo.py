"""``packlab demo``: the main job. A real chunked workload on a right-sized local cluster.

It generates a few GB of float64 data *on the workers* (nothing travels but partial
sums), reduces it, and checks the answer against NumPy computed independently
here, block by block, in bounded memory.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import dask.array as da
import numpy as np

from .clusters import PacklabWarning
from .launch import launch
from .units import format_bytes, memory_bytes

_CHUNK = 2**23  # elements per chunk: 64 MiB of float64


def field(start: int, stop: int) -> np.ndarray:
    """The demo's data: a deterministic pseudo-random value in [0, 1) for each index.

    Examples
    --------
    >>> field(0, 3).round(3).tolist()
    [0.0, 0.618, 0.236]
    """
    i = np.arange(start, stop, dtype=np.float64)
    return np.modf(i * 0.6180339887498949)[0]


def _block(block_info=None):
    (lo, hi), = block_info[None]["array-location"]
    return field(lo, hi)


def dask_field(n: int, chunk: int = _CHUNK) -> da.Array:
    """The same data as :func:`field`, as a lazy dask array generated on the workers."""
    chunks = (tuple(min(chunk, n - s) for s in range(0, n, chunk)),)
    return da.map_blocks(_block, chunks=chunks, dtype=np.float64)


def numpy_reference(n: int, chunk: int = _CHUNK) -> float:
    """sum(x*x + 2x) over the field with plain NumPy, one block at a time."""
    total = 0.0
    for s in range(0, n, chunk):
        x = field(s, min(n, s + chunk))
        total += float(np.sum(x * x + 2 * x))
    return total


@dataclass
class KernelResult:
    """The kernel part of the demo: per-cell variance over time with packlab.mapreduce."""

    shape: tuple[int, int, int]
    seconds: float
    max_error: float  # relative, on the cells checked against NumPy

    @property
    def ok(self) -> bool:
        return self.max_error < 1e-9


@dataclass
class DemoResult:
    workers: int
    threads: int
    nbytes: int
    seconds: float
    value: float
    reference: float
    kernel: KernelResult | None = None

    @property
    def gbps(self) -> float:
        return self.nbytes / self.seconds / 1e9

    @property
    def ok(self) -> bool:
        kernel_ok = self.kernel is None or self.kernel.ok
        return bool(np.isclose(self.value, self.reference, rtol=1e-9)) and kernel_ok


_GRID = (256, 256)  # lat x lon of the kernel demo's field


def _field3d(block_info=None):
    (t0, t1), _, _ = block_info[None]["array-location"]
    cells = _GRID[0] * _GRID[1]
    return field(t0 * cells, t1 * cells).reshape(t1 - t0, *_GRID)


def kernel_stats(n: int) -> KernelResult:
    """Per-cell variance over time of ``anomaly(t) = (t - 0.5)**2`` with a packlab kernel,
    on the data of :func:`field` seen as a (time, lat, lon) field; checked on a corner
    of cells against NumPy."""
    from .kernels import kernel, mapreduce

    @kernel
    def anomaly(t):
        return (t - 0.5) ** 2

    cells = _GRID[0] * _GRID[1]
    nt = max(1, n // cells)
    tchunk = max(1, _CHUNK // cells)
    x = da.map_blocks(_field3d, dtype=np.float64,
                      chunks=da.core.normalize_chunks((tchunk, *_GRID), (nt, *_GRID)))
    t0 = time.perf_counter()
    var = mapreduce(anomaly, x, reduce="var", axis=0).compute()
    dt = time.perf_counter() - t0
    rows = np.arange(nt)[:, None] * cells + np.arange(4)[None, :]  # cells (0, 0..3)
    want = np.var((np.modf(rows * 0.6180339887498949)[0] - 0.5) ** 2, axis=0)
    err = float(np.max(np.abs(var[0, :4] - want) / want))
    return KernelResult((nt, *_GRID), dt, err)


def run(size: str | int = "2GB", profile: str = "analytics", workers: int | None = None) -> DemoResult:
    """Run the demo workload and return its figures (the CLI prints them)."""
    nbytes = memory_bytes(size, "size")
    n = max(1, nbytes // 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PacklabWarning)  # the summary reports the sizing
        pc = launch(profile=profile, workers=workers or 2, wait=True)
    with pc:
        x = dask_field(n)
        t0 = time.perf_counter()
        value = float((x * x + 2 * x).sum().compute())
        dt = time.perf_counter() - t0
        threads = sum(w["nthreads"] for w in pc.client.scheduler_info()["workers"].values())
        kern = kernel_stats(n)
        return DemoResult(pc.workers, threads, n * 8, dt, value, numpy_reference(n), kern)


def summary(r: DemoResult) -> str:
    check = "matches NumPy" if r.ok else f"DOES NOT match NumPy ({r.reference!r})"
    text = (
        f"sum(x*x + 2x) over {format_bytes(r.nbytes)} of float64 on {r.workers} workers "
        f"({r.threads} threads): {r.value:.6e}, {check}\n"
        f"wall time {r.seconds:.2f} s, {r.gbps:.2f} GB/s"
    )
    if r.kernel is not None:
        k = r.kernel
        kcheck = "matches NumPy" if k.ok else f"DOES NOT match NumPy (relative error {k.max_error:.1e})"
        text += (
            f"\nkernel: per-cell variance over time of (t - 0.5)**2, field {k.shape[0]} x {k.shape[1]}"
            f" x {k.shape[2]}, packlab.mapreduce: {k.seconds:.2f} s "
            f"({8 * np.prod(k.shape) / k.seconds / 1e9:.2f} GB/s, generating the data included), {kcheck}"
        )
    return text
