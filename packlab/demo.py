"""``packlab demo``: the main job. A real chunked workload on a right-sized local cluster.

It generates a few GB of float64 data *on the workers* and keeps it there (when it
fits in half their memory), then reduces it twice, with the plain Dask expression and
with a fused :func:`packlab.mapreduce` kernel, and does the same for a per-cell
variance over time of the data seen as a (time, lat, lon) field. Nothing travels but
partial results. Every answer is checked against NumPy computed independently here,
block by block, in bounded memory.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from dataclasses import field as _field

import dask.array as da
import numpy as np

from .checks import integer
from .clusters import PacklabWarning
from .clusters.launch import launch
from .errors import PacklabError
from .resources import this_machine
from .units import format_bytes, memory_bytes

#: The demo's data is at most this many times the machine's memory: beyond what fits, it is
#: generated again for every pass, and a few passes over that are already minutes.
DEMO_MEMORY_FACTOR = 4

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


_GRID = (256, 256)  # lat x lon: the data seen as a (time, lat, lon) field
_CELLS = _GRID[0] * _GRID[1]


def _block(block_info=None):
    (t0, t1), _, _ = block_info[None]["array-location"]
    return field(t0 * _CELLS, t1 * _CELLS).reshape(t1 - t0, *_GRID)


def dask_field(nt: int, chunk: int = _CHUNK) -> da.Array:
    """:func:`field` as a lazy (time, lat, lon) dask array generated on the workers,
    ``chunk`` elements (whole time steps) per block."""
    chunks = da.core.normalize_chunks((max(1, chunk // _CELLS), *_GRID), (nt, *_GRID))
    return da.map_blocks(_block, chunks=chunks, dtype=np.float64)


def numpy_reference(n: int, chunk: int = _CHUNK) -> float:
    """sum(x*x + 2x) over the field with plain NumPy, one block at a time."""
    total = 0.0
    for s in range(0, n, chunk):
        x = field(s, min(n, s + chunk))
        total += float(np.sum(x * x + 2 * x))
    return total


@dataclass
class Timing:
    """One way of computing one answer: how long it took (the first run includes
    compiling on every worker; the second is the steady state) and whether it was right."""

    label: str
    first: float
    seconds: float
    ok: bool


@dataclass
class Part:
    """One question the demo answers, with each way of computing it."""

    title: str
    nbytes: int
    timings: list[Timing] = _field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.timings)

    def gbps(self, t: Timing) -> float:
        return self.nbytes / t.seconds / 1e9


@dataclass
class DemoResult:
    workers: int
    threads: int
    nbytes: int
    persisted: bool
    generate_seconds: float
    parts: list[Part]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.parts)


def _poly(x):
    return x * x + 2 * x


def _anomaly(t):
    return (t - 0.5) ** 2


def _timed(label: str, fn, check) -> Timing:
    t0 = time.perf_counter()
    ok = check(fn())
    t1 = time.perf_counter()
    ok = ok and check(fn())
    return Timing(label, t1 - t0, time.perf_counter() - t1, bool(ok))


def _variance_reference(nt: int, cells: int = 4) -> np.ndarray:
    """NumPy's per-cell variance over time of ``_anomaly`` for the first ``cells`` cells."""
    rows = np.arange(nt)[:, None] * _CELLS + np.arange(cells)[None, :]
    return np.var(_anomaly(np.modf(rows * 0.6180339887498949)[0]), axis=0)


def run(size: str | int = "2GB", profile: str = "analytics", workers: int | None = None) -> DemoResult:
    """Run the demo workload and return its figures (the CLI prints them)."""
    from .kernels import kernel, mapreduce

    nbytes = memory_bytes(size, "size")
    machine = this_machine().memory
    most = DEMO_MEMORY_FACTOR * machine
    if nbytes > most:
        raise PacklabError(
            f"size={size!r} is {format_bytes(nbytes)}, more than {DEMO_MEMORY_FACTOR}x this machine's "
            f"memory ({format_bytes(machine)}): the demo would run for hours or more. "
            f'Give at most size="{most // 2**30}GiB", e.g. size="8GB".', field="size", value=size)
    workers = 2 if workers is None else integer(workers, "workers", minimum=1,
                                                  fix="The demo needs at least one worker.")
    nt = max(2, nbytes // 8 // _CELLS)  # whole time steps of the field
    n = nt * _CELLS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PacklabWarning)  # the summary reports the sizing
        pc = launch(profile=profile, workers=workers, wait=True)
    with pc:
        client = pc.client
        info = client.scheduler_info(n_workers=-1)["workers"].values()
        threads = sum(w["nthreads"] for w in info)
        persisted = 2 * n * 8 <= sum(w.get("memory_limit") or 0 for w in info)
        x = dask_field(nt)
        t0 = time.perf_counter()
        if persisted:  # generate once and keep it on the workers
            x = client.persist(x)
            client.rebalance(x)  # moves chunks off a worker holding far more than the others
        gen = time.perf_counter() - t0

        poly = kernel(_poly)
        want = numpy_reference(n)

        def close(v):
            return np.isclose(v, want, rtol=1e-9)

        total = Part("sum(x*x + 2x)", n * 8)
        total.timings.append(_timed("dask", lambda: float((x * x + 2 * x).sum().compute()), close))
        total.timings.append(_timed("packlab", lambda: float(mapreduce(poly, x).compute()), close))
        parts = [total]

        ref = _variance_reference(nt)

        def near(v):
            return np.allclose(v[0, :4], ref, rtol=1e-9)

        var = Part(f"per-cell variance over time of (t - 0.5)**2, {nt} x {_GRID[0]} x {_GRID[1]}", n * 8)
        var.timings.append(_timed("dask", lambda: ((x - 0.5) ** 2).var(axis=0).compute(), near))
        var.timings.append(_timed("packlab", lambda: mapreduce(kernel(_anomaly), x, reduce="var",
                                                               axis=0).compute(), near))
        parts.append(var)
        return DemoResult(pc.workers, threads, n * 8, persisted, gen, parts)


def summary(r: DemoResult) -> str:
    where = ("generated on the workers and kept there" if r.persisted
             else "generated on the fly for each pass (too big to keep in worker memory)")
    workers = f"{r.workers} worker{'s' if r.workers != 1 else ''}"
    lines = [f"{format_bytes(r.nbytes)} of float64 on {workers} ({r.threads} threads), "
             f"{where}: {r.generate_seconds:.2f} s"]
    for part in r.parts:
        lines.append(f"{part.title}:")
        base = part.timings[0]
        for t in part.timings:
            check = "matches NumPy" if t.ok else "DOES NOT match NumPy"
            speed = "" if t is base else f", {base.seconds / t.seconds:.1f}x {base.label}"
            lines.append(f"  {t.label:8s} {t.seconds:7.3f} s  {part.gbps(t):7.2f} GB/s{speed}  {check}")
    lines.append("(second runs; the first packlab run of each also compiled the kernel on every "
                 f"worker: {', '.join(f'{p.timings[-1].first:.2f} s' for p in r.parts)})")
    return "\n".join(lines)
