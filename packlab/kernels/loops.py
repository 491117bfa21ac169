"""The fused CPU pass: one generated, numba-compiled loop nest per chunk layout.

Inputs arrive as broadcast *views* of one chunk (stride 0 where broadcast). Axes are
first collapsed where every input is contiguous across them, so the common cases
become a 1-D contiguous loop (full reduction) or a 2-D loop (reduce the outer axis,
keep the inner one), which LLVM vectorizes. The loop calls the kernel on each element
and folds the value straight into the reduction's state: no temporary array. Values
of an inner reduced axis are accumulated in locals ("reassoc" fast-math lets LLVM
use several accumulators) and flushed once per output cell. "contract" allows fused
multiply-adds; no flag that assumes away NaN or infinity is used, so ``skipna`` holds.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numpy.lib.stride_tricks import as_strided

from .kernel import Kernel
from .reductions import Reduction

_LOOPS: dict[tuple, Any] = {}
UNROLL = 4  # reduced rows folded in locals per state update when the inner axis is kept
_LOCK = threading.Lock()


def collapse(shape: tuple[int, ...], kept: tuple[bool, ...], arrays: list[Any], as_strided=as_strided):
    """Drop length-1 axes and merge neighbours that all inputs traverse contiguously.

    Returns ``(shape, kept, views)``; C-order over the kept axes is unchanged, so the
    flat index of an output cell is the same before and after. ``as_strided`` makes
    the views (NumPy's, or CuPy's for device arrays).

    Examples
    --------
    >>> a = np.zeros((4, 3, 5))
    >>> s, k, v = collapse(a.shape, (False, True, True), [a])
    >>> s, k
    ((4, 15), (False, True))
    """
    dims: list[list[Any]] = []  # [size, kept, strides]
    for i, n in enumerate(shape):
        if n == 1:
            continue
        strides = [a.strides[i] for a in arrays]
        if dims and dims[-1][1] == kept[i] and all(
            ps == s * n for ps, s in zip(dims[-1][2], strides, strict=True)
        ):
            dims[-1][0] *= n
            dims[-1][2] = strides
        else:
            dims.append([n, kept[i], strides])
    if not dims:
        dims = [[1, False, [0] * len(arrays)]]
    cshape = tuple(d[0] for d in dims)
    views = [as_strided(a, cshape, tuple(d[2][j] for d in dims)) for j, a in enumerate(arrays)]
    return cshape, tuple(d[1] for d in dims), views


def loop_source(nin: int, kept: tuple[bool, ...], red: Reduction) -> str:
    """Python source of the fused loop nest for this layout and reduction."""
    nd = len(kept)
    fields = red.state_dtype().names
    args = [f"a{j}" for j in range(nin)] + [f"s_{f}" for f in fields] + [f"p_{p}" for p in red.params]
    kept_axes = [i for i in range(nd) if kept[i]]
    o_expr = " + ".join(
        f"i{i}" + "".join(f" * n{j}" for j in kept_axes[k + 1:]) for k, i in enumerate(kept_axes)
    ) or "0"
    inner = nd  # first axis of the trailing reduced run, accumulated in locals
    if red.uses_locals:
        while inner > 0 and not kept[inner - 1]:
            inner -= 1

    def value(index: list[str]) -> str:
        idx = ", ".join(index)
        return "v = kern(" + ", ".join(f"a{j}[{idx}]" for j in range(nin)) + ")"

    out = [f"def chunk({', '.join(args)}):"]
    out.append("    " + "".join(f"n{i}, " for i in range(nd)) + "= a0.shape")
    if red.needs_shift:  # per-cell shift: the value at the cell's first reduced element
        nonempty = " and ".join(f"n{i} > 0" for i in range(nd) if not kept[i]) or "True"
        out.append(f"    if {nonempty}:")
        pad = "        "
        for i in kept_axes:
            out.append(f"{pad}for i{i} in range(n{i}):")
            pad += "    "
        out += [pad + f"o = {o_expr}",
                pad + "if s_n[o] == 0:",  # a state carried over from earlier chunks keeps its shift
                pad + "    " + value([f"i{i}" if kept[i] else "0" for i in range(nd)]),
                pad + "    x = np.float64(v)",
                pad + "    s_k[o] = x if np.isfinite(x) else 0.0"]
    pad = "    "
    index = [f"i{i}" for i in range(nd)]
    reduced = [i for i in range(nd) if not kept[i]]
    if inner == nd and red.uses_locals and reduced:
        return "\n".join(out + _unrolled(nd, reduced[-1], o_expr, index, value, red)) + "\n"
    for i in range(nd):
        if i == inner:
            out.append(pad + f"o = {o_expr}")
            out += [pad + x for x in red.init_locals()]
        out.append(f"{pad}for i{i} in range(n{i}):")
        pad += "    "
    if inner == nd:
        out += [pad + f"o = {o_expr}", pad + value(index)]
        out += [pad + x for x in red.update_state()]
    else:
        out.append(pad + value(index))
        out += [pad + x for x in red.update_local()]
        pad = "    " * (inner + 1)
        out += [pad + x for x in red.flush()]
    return "\n".join(out) + "\n"


def _unrolled(nd: int, r: int, o_expr: str, index: list[str], value, red: Reduction) -> list[str]:
    """The loop nest when the innermost axis is kept: every element would update its
    cell's state in memory (loads and stores of several arrays per element, which
    streams them through the caches once per reduced row). Instead the last reduced
    axis ``r`` advances by UNROLL rows at a time and each cell folds those rows in
    locals, then flushes once: UNROLL times less state traffic; a plain pass does the
    remaining rows."""
    out, pad = [], "    "
    for i in range(r):
        out.append(f"{pad}for i{i} in range(n{i}):")
        pad += "    "
    out.append(f"{pad}m = n{r} - n{r} % {UNROLL}")
    for start, stop, step in (("0", "m", f", {UNROLL}"), ("m", f"n{r}", "")):
        p = pad
        out.append(f"{p}for i{r} in range({start}, {stop}{step}):")
        p += "    "
        for i in range(r + 1, nd):
            out.append(f"{p}for i{i} in range(n{i}):")
            p += "    "
        out.append(p + f"o = {o_expr}")
        if step:
            out += [p + x for x in red.init_locals()]
            for u in range(UNROLL):
                out.append(p + value([f"i{r} + {u}" if i == r else ix for i, ix in enumerate(index)]))
                out += [p + x for x in red.update_local()]
            out += [p + x for x in red.flush()]
        else:
            out += [p + value(index), *(p + x for x in red.update_state())]
    return out


def generated(cache: dict, key: tuple, make_source: Callable[[], str], ns: dict[str, Any], label: str,
              jit: Callable[[Any], Any]):
    """The compiled ``chunk`` function of generated source, made once per process and
    ``key`` (the CPU loops here, the CUDA kernels in :mod:`.cuda`)."""
    fn = cache.get(key)
    if fn is None:
        with _LOCK:
            fn = cache.get(key)
            if fn is None:
                exec(compile(make_source(), label, "exec"), ns)
                fn = cache[key] = jit(ns["chunk"])
    return fn


def compiled_loop(kern: Kernel, nin: int, kept: tuple[bool, ...], red: Reduction):
    """The numba dispatcher for this layout, made once per process (then per dtypes)."""
    return generated(
        _LOOPS, (kern.uid, nin, kept, red.key()), lambda: loop_source(nin, kept, red),
        {"kern": kern.cpu, "np": np, **red.globals()}, f"<packlab loop {kern.name}>",
        numba.njit(nogil=True, fastmath={"reassoc", "contract"}, error_model="numpy"),
    )


def chunk_state(kern: Kernel, red: Reduction, blocks: list[np.ndarray], kept: tuple[bool, ...],
                state: dict[str, np.ndarray] | None = None):
    """Run the fused pass over one chunk; return the state, one record per kept cell.

    Given the ``state`` of earlier chunks with the same kept cells, folds into it.
    """
    shape = np.broadcast_shapes(*(b.shape for b in blocks))
    views = [np.broadcast_to(b, shape) for b in blocks]
    cshape, ckept, cviews = collapse(shape, kept, views)
    cells = math.prod(n for n, k in zip(cshape, ckept, strict=True) if k)
    if state is None:
        state = red.init_state(cells)
    fn = compiled_loop(kern, len(blocks), ckept, red)
    fn(*cviews, *state.values(), *red.param_values())
    return state
