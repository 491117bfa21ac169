"""The CUDA path: the same fused map-reduce, as a generated numba CUDA kernel.

Each chunk is one launch. A thread owns a (row, cell) pair: it walks a strided share
of the cell's reduced elements, folds the kernel's values into registers and writes
its partial state once, so there are no atomics and any reduction (a user's combine
included) works. With many cells each thread owns whole cells; with few cells (a
full reduction) ``rows`` threads share each one. Adjacent threads read adjacent
elements either way, so loads coalesce. The small per-thread states are then combined
with the reduction's own associative combine. Runs under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) for tests on machines without a GPU.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import Any

import numpy as np

from ..errors import PacklabError
from .codegen import state_per_row
from .kernel import Kernel
from .loops import collapse, generated
from .reductions import Reduction

_KERNELS: dict[tuple, Any] = {}
_SIM_LOCK = threading.Lock()
THREADS = 256


def simulator() -> bool:
    """True under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1`` before import)."""
    from numba import config

    return bool(config.ENABLE_CUDASIM)


def local_gpu() -> bool:
    """A CUDA device (or the simulator) is usable in this process."""
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # a broken driver is "no GPU" here; the error says what to do
        return False


def cluster_has_gpus() -> bool | None:
    """Whether the active Dask client's workers offer the ``GPU`` resource (None: no client)."""
    from .locality import active_client

    client = active_client()
    if client is None:
        return None
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers)


def resolve_device(device: str) -> bool:
    """``True`` to run the CUDA path. ``auto``: only when the cluster has GPU workers."""
    gpus = cluster_has_gpus()
    if device == "auto":
        return bool(gpus)
    if device == "cpu":
        return False
    if gpus or (gpus is None and local_gpu()):
        return True
    where = ("the connected Dask cluster has no worker with the 'GPU' resource" if gpus is False
             else "no CUDA device is visible to this process")
    raise PacklabError(
        f"device='gpu' but {where}: use device='cpu' (or 'auto'), or run on a GPU machine, "
        "e.g. packlab.launch(gpus=1) there (needs pip install 'packlab[gpu]').",
        field="device", value=device)


def gpu_source(nin: int, kept: tuple[bool, ...], red: Reduction) -> str:
    """Python source of the CUDA kernel for this layout and reduction."""
    nd = len(kept)
    fields = red.state_dtype().names
    args = [f"a{j}" for j in range(nin)] + [f"s_{f}" for f in fields] + [f"p_{p}" for p in red.params]
    out = [f"def chunk({', '.join(args)}, K, R, rows):",
           "    t = cuda.grid(1)",
           "    if rows > 1:",
           "        if t >= rows * K:",
           "            return",
           "        start, step, row = t % K, K, t // K",
           "    else:",
           "        start, step, row = t, cuda.gridsize(1), 0",
           "    " + "".join(f"n{i}, " for i in range(nd)) + "= a0.shape",
           "    for o in range(start, K, step):"]
    out += _unravel("o", [i for i in range(nd) if kept[i]], "        ")
    body = "            "
    if red.uses_locals:
        out += ["        " + x for x in red.device_init_locals()]
    out.append("        for r in range(row, R, rows):")
    out += _unravel("r", [i for i in range(nd) if not kept[i]], body)
    idx = ", ".join(f"i{i}" for i in range(nd))
    out.append(body + "v = kern(" + ", ".join(f"a{j}[{idx}]" for j in range(nin)) + ")")
    if red.uses_locals:
        out += [body + x for x in red.device_update_local()]
        out += [f"        s_{f}[row, o] = l_{f}" for f in fields]
    else:
        out += [body + x for x in state_per_row(red.update_state(), fields)]
    return "\n".join(out) + "\n"


def _unravel(flat: str, axes: list[int], pad: str) -> list[str]:
    if not axes:
        return []
    if len(axes) == 1:
        return [f"{pad}i{axes[0]} = {flat}"]
    lines = [f"{pad}rem = {flat}"]
    for i in reversed(axes[1:]):
        lines += [f"{pad}i{i} = rem % n{i}", f"{pad}rem = rem // n{i}"]
    return [*lines, f"{pad}i{axes[0]} = rem"]


def compiled_kernel(kern: Kernel, nin: int, kept: tuple[bool, ...], red: Reduction):
    """The CUDA kernel for this layout, generated once per process."""
    from numba import cuda

    return generated(
        _KERNELS, (kern.uid, nin, kept, red.key()), lambda: gpu_source(nin, kept, red),
        {"cuda": cuda, "np": np, "kern": kern.cuda, **red.device_globals()},
        f"<packlab cuda {kern.name}>", cuda.jit,
    )


def _xp_views(blocks: list[np.ndarray]):
    """Chunk views on the device: CuPy on a real GPU; host arrays under the simulator."""
    if simulator():
        return np, np.lib.stride_tricks.as_strided
    try:
        import cupy
    except ImportError:
        raise PacklabError(
            "device='gpu' needs CuPy on the workers: pip install 'packlab[gpu]' (CUDA 12)."
        ) from None
    return cupy, cupy.lib.stride_tricks.as_strided


def chunk_partial(kern: Kernel, red: Reduction, blocks: list[np.ndarray], kept: tuple[bool, ...]):
    """The GPU counterpart of the CPU pass: one launch, one partial per kept cell."""
    from numba import cuda

    xp, as_strided = _xp_views(blocks)
    blocks = [xp.asarray(b) for b in blocks]
    shape = np.broadcast_shapes(*(b.shape for b in blocks))
    views = [xp.broadcast_to(b, shape) for b in blocks]
    cshape, ckept, views = collapse(shape, kept, views, as_strided)
    if simulator():  # stand-ins for device arrays, as CuPy views would be on a GPU
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        views = [FakeCUDAArray(v) for v in views]
    cells = math.prod(n for n, k in zip(cshape, ckept, strict=True) if k)
    reduced = math.prod(n for n, k in zip(cshape, ckept, strict=True) if not k)
    threads, blocks_n = (8, 2) if simulator() else (THREADS, _grid(reduced * cells))
    rows = max(1, (threads * blocks_n) // max(cells, 1))
    dt = red.state_dtype()
    if red.uses_locals:  # each thread writes its (row, cell) slots once: no init, no upload
        dev = {f: cuda.device_array((rows, cells, *dt[f].shape), dt[f].base) for f in dt.names}
    else:
        state = red.init_state(rows * cells)
        dev = {f: cuda.to_device(a.reshape((rows, cells, *a.shape[1:]))) for f, a in state.items()}
    if cells:
        fn = compiled_kernel(kern, len(views), ckept, red)
        with _SIM_LOCK if simulator() else contextlib.nullcontext():  # the simulator runs one at a time
            fn[blocks_n, threads](*views, *dev.values(), *red.param_values(), cells, reduced, rows)
    if red.additive:  # sum the per-thread rows on the device; only one row per cell comes back
        return red.device_partial({f: _row_sum(d) for f, d in dev.items()}).reshape(cells)
    host = {f: d.copy_to_host().reshape((rows * cells, *dt[f].shape)) for f, d in dev.items()}
    per_thread = red.device_partial(host).reshape(rows, cells)
    return red.combine(per_thread, (0,)).reshape(cells)


def _row_sum(d) -> np.ndarray:
    if simulator():
        return d.copy_to_host().sum(axis=0)
    import cupy

    return cupy.asarray(d).sum(axis=0).get()


def _grid(n: int) -> int:
    from numba import cuda

    sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
    return max(1, min(math.ceil(n / THREADS), 8 * sms))
