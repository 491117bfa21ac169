"""``packlab demo``: the whole pack in one command, on a right-sized local cluster.

It launches a local cluster from a profile with telemetry into ``OUT/packlab.db``, runs
a :class:`packlab.JobQueue` batch (:mod:`packlab.demo.batch`: two owners under fair
share, a flaky job that succeeds on retry with backoff, one that ends in the dead-letter
queue), then the kernel map-reduce below, and ends with the five metrics, the cost, the
advisor's findings and ``OUT/report.html`` (the panel, offline).

The map-reduce generates a few GB of float64 data *on the workers* and keeps it there (when it
fits in half their memory), then reduces it twice, with the plain Dask expression and
with a fused :func:`packlab.mapreduce` kernel, and does the same for a per-cell
variance over time of the data seen as a (time, lat, lon) field. Nothing travels but
partial results. Every answer is checked against NumPy computed independently here,
block by block, in bounded memory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from dataclasses import field as _field
from typing import Any

import dask.array as da
import numpy as np

from ..checks import integer
from ..clusters.launch import launch
from ..errors import PacklabError, PacklabWarning
from ..resources import this_machine
from ..units import format_bytes, memory_bytes
from .pipeline import PipelineDemo, pipeline_summary, run_pipeline_demo

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
    batch: Any = None  # demo_batch.BatchResult
    pipeline: PipelineDemo | None = None
    report: str | None = None  # the report.html written
    store: str | None = None
    summary_text: str = ""  # the five metrics, the cost and the findings
    pricing_note: str = ""

    @property
    def ok(self) -> bool:
        b = self.batch
        batch_ok = b is None or (b.fair_share_ok and b.flaky_result == "ok on retry" and len(b.dead) == 1)
        return all(p.ok for p in self.parts) and batch_ok and (self.pipeline is None or self.pipeline.ok)


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


def _pricing():
    """The site's prices, or the example ``aws-on-demand`` rates when none is set (so the
    demo shows what cost looks like), and a note saying which."""
    from ..telemetry.pricing import Pricing

    p = Pricing.from_config()
    if p.core_hour or p.gb_hour or p.gpu_hour or p.su_price:
        return p, "priced with packlab.pricing"
    return Pricing.preset("aws-on-demand"), ("priced with the example aws-on-demand rates "
                                             "(no packlab.pricing set)")


def run(size: str | int = "2GB", profile: str = "analytics", workers: int | None = None,
        out: str | os.PathLike = "packlab-demo") -> DemoResult:
    """Run the demo and return its figures (the CLI prints them); the store and the report
    go to the folder ``out`` (made when missing)."""
    from ..kernels import kernel, mapreduce
    from ..telemetry import textreport as text_report
    from ..telemetry.monitor import monitor
    from ..telemetry.summary import advise
    from ..ui import report as html_report
    from . import batch as demo_batch

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
    out = os.path.abspath(os.fspath(out))
    os.makedirs(out, exist_ok=True)
    store = os.path.join(out, "packlab.db")
    for suffix in ("", "-wal", "-shm"):  # a fresh run each time
        with contextlib.suppress(FileNotFoundError):
            os.remove(store + suffix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PacklabWarning)  # the summary reports the sizing
        # Its failing jobs fail on purpose, and the summary reports each: the workers'
        # "Compute Failed" log lines would only repeat that as noise.
        pc = launch(profile=profile, workers=workers, wait=True, store=store, silence_logs="CRITICAL")
    with pc, tempfile.TemporaryDirectory() as scratch:
        batch = demo_batch.run(pc, store, scratch)
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
        pipe = run_pipeline_demo(pc)
        result = DemoResult(pc.workers, threads, n * 8, persisted, gen, parts, batch=batch, pipeline=pipe)
    pricing, result.pricing_note = _pricing()
    m = monitor(store, pricing=pricing)
    result.summary_text = text_report.text(m.snapshot(), advise(m))
    result.store = store
    result.report = html_report.write(m, os.path.join(out, "report.html"), title="packlab demo")
    return result


def summary(r: DemoResult) -> str:
    where = ("generated on the workers and kept there" if r.persisted
             else "generated on the fly for each pass (too big to keep in worker memory)")
    workers = f"{r.workers} worker{'s' if r.workers != 1 else ''}"
    lines = []
    b = r.batch
    if b is not None:
        owners = " and ".join(f"{k} ({v})" for k, v in b.per_owner.items())
        lines += [f"== job queue: {b.jobs} jobs for {owners} under fair share, {b.seconds:.1f} s",
                  f"  fair share: {'bob was not starved behind alice' if b.fair_share_ok else 'BOB STARVED'}",
                  f"  flaky job: {b.flaky_result} after {b.flaky_attempts} attempts (backoff in the queue)",
                  f"  dead-letter queue: {len(b.dead)} job ({', '.join(b.dead) or 'none'}): "
                  "packlab queue ls --status dead --store " + (r.store or "..."),
                  "== map-reduce"]
    lines += [f"{format_bytes(r.nbytes)} of float64 on {workers} ({r.threads} threads), "
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
    if r.pipeline is not None:
        lines.append(pipeline_summary(r.pipeline))
    if r.summary_text:
        lines += [f"== the five metrics, cost ({r.pricing_note}) and findings", r.summary_text]
    if r.report:
        lines += [f"report: {r.report}", f"live panel: packlab dashboard --store {r.store}"]
    return "\n".join(lines)
