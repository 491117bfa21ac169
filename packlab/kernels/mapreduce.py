"""``packlab.mapreduce``: run a kernel fused on every chunk, combine partials in a tree.

The graph has one task per chunk (the fused pass of :mod:`.loops` or :mod:`.cuda`,
returning a small structured *partial*), then Dask's own tree reduction
(:func:`dask.array.reduction`, ``split_every``) over the partials, then a finalize.
Inputs stay where they live: on a cluster each chunk's task runs on the worker that
holds the chunk and only partials travel. When the inputs are persisted on the
workers, :mod:`.locality` replaces the per-chunk tasks with one task per worker
thread and, for a small fan-in, the tree with one final task per kept block.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .. import checks
from ..errors import PacklabError, bad_value
from . import cuda as _cuda
from . import locality
from .kernel import Kernel, compute_dtype, kernel
from .loops import chunk_state
from .reductions import SKIPNA_FIX, Reduction, make_reduction


def mapreduce(
    kern: Kernel | Callable[..., Any],
    *arrays: Any,
    reduce: str | Callable[..., Any] = "sum",
    axis: int | Sequence[int] | None = None,
    dim: str | Sequence[str] | None = None,
    device: str = "auto",
    split_every: int | dict | None = None,
    skipna: bool = False,
    **options: Any,
):
    """Reduce ``kern(*arrays)`` without ever storing it: one fused pass per chunk.

    Parameters
    ----------
    kern : Kernel or function
        A :func:`packlab.kernel` (a plain scalar function is wrapped on the fly).
    *arrays : NumPy arrays, dask arrays, xarray DataArrays or scalars
        One per kernel argument; broadcast like NumPy (DataArrays: by dimension name,
        their coordinates must agree).
    reduce : str or function
        ``"sum"``, ``"min"``, ``"max"``, ``"mean"``, ``"var"``, ``"std"`` (option
        ``ddof=``), ``"count"`` (valid values: all but NaN, as xarray's ``count()``,
        whatever ``skipna``; to count where a boolean kernel holds, use ``"sum"``),
        ``"histogram"`` (``bins=`` and ``range=``, or bin edges), or your
        own associative, commutative combine ``f(a, b)``: ``reduce=f, identity=x`` or,
        equivalently, ``reduce="custom", combine=f, identity=x``.
    axis, dim : optional
        Axes (positions) or dims (names, DataArrays only) to reduce; default all.
    device : {"auto", "cpu", "gpu"}
        ``"auto"`` runs on GPU workers (Dask resource ``GPU``) when the cluster has
        them, else on CPU. ``"gpu"`` runs the CUDA path (CuPy arrays), and fails clearly
        where there is no GPU.
    split_every : int or dict, optional
        Fan-in of the tree that combines partials (Dask's default when ``None``), or
        ``{axis: fan-in}`` (axes of the broadcast inputs, negative ones counted from the
        end; an entry for a kept axis has no effect, as in Dask).
    skipna : bool
        Ignore NaN values of the kernel (as ``np.nansum`` and friends).
    **options
        Options of the reduction (``bins``, ``range``, ``ddof``, ``combine``, ``identity``).

    Returns
    -------
    dask.array.Array or xarray.DataArray
        Lazy; a DataArray with the kept dims and their coordinates when any input is
        one. Histograms add a trailing ``bin`` axis.

    Examples
    --------
    >>> import numpy as np, dask.array as da, packlab
    >>> @packlab.kernel
    ... def poly(x):
    ...     return x * x + 2 * x
    >>> x = da.arange(10.0, chunks=3)
    >>> float(packlab.mapreduce(poly, x).compute())
    375.0
    >>> import xarray as xr
    >>> t = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("time", "lat"),
    ...                  coords={"lat": [10, 20, 30]})
    >>> packlab.mapreduce(poly, t, reduce="var", dim="time").compute().values
    array([ 56.25, 110.25, 182.25])
    >>> int(packlab.mapreduce(poly, x, reduce="custom", combine=lambda a, b: max(a, b),
    ...                       identity=0.0).compute())
    99
    """
    kern = kernel(kern)
    if not arrays:
        raise PacklabError(f"arrays=() is invalid: mapreduce({kern.name}) got no arrays; pass one "
                           "per kernel argument.", field="arrays", value=())
    if axis is not None and dim is not None:
        raise PacklabError(f"axis={axis!r} and dim={dim!r} were both given: pass positions (axis) or "
                           "names (dim), not both.", field="dim", value=dim)
    split_every = _split_every(split_every)
    if not isinstance(device, str) or device not in ("auto", "cpu", "gpu"):
        raise bad_value("device", device, "'auto', 'cpu' or 'gpu'",
                        "Use device='auto' to run on GPU workers when the cluster has them.")
    checks.boolean(skipna, "skipna", fix=SKIPNA_FIX)

    labelled = any(isinstance(a, xr.DataArray) for a in arrays)
    dims, coords, data = (_labelled(arrays) if labelled else
                          (None, {}, [_as_dask(a, f"arrays[{i}]") for i, a in enumerate(arrays)]))
    try:
        shape = np.broadcast_shapes(*(x.shape for x in data))
    except ValueError:
        shapes = [tuple(x.shape) for x in data]
        raise PacklabError(
            f"arrays of shapes {shapes} do not broadcast together: "
            "make trailing dimensions equal or 1 (NumPy rules), or use DataArrays with named dims.",
            field="arrays", value=shapes) from None
    axes = _axes(axis, dim, len(shape), dims)
    split_every = _split_axes(split_every, len(shape))

    vtype = kern.result_dtype([x.dtype for x in data])
    red = make_reduction(reduce, vtype, skipna, options)
    if red.empty_error and math.prod(shape[a] for a in axes) == 0:
        raise PacklabError(
            f"reduce={red.name!r} over zero elements has no answer (axes {axes} of shape "
            f"{tuple(shape)} are empty): use 'sum', 'count' or 'mean', or check the selection."
        )
    gpu = _cuda.resolve_device(device)

    if not shape:  # all scalars: reduce one element
        data, shape, axes = [x[None] for x in data], (1,), (0,)
    result = _graph(kern, red, data, shape, axes, gpu, split_every)
    if not labelled:
        return result
    return _to_xarray(result, kern, red, dims, coords, axes, shape)


def _graph(kern, red, data, shape, axes, gpu, split_every):
    nd = len(shape)
    kept = tuple(i not in axes for i in range(nd))
    pdt = red.partial_dtype()
    task = functools.partial(_partial_block, kern=kern, red=red, kept=kept, gpu=gpu)
    many = functools.partial(partial_of_chunks, kern=kern, red=red, kept=kept, gpu=gpu)
    annotations = {"resources": {"GPU": 1}} if gpu and _cuda.cluster_has_gpus() else {}
    client = locality.active_client()
    partials = None
    with dask.annotate(**annotations):
        if client is not None:
            partials = locality.grouped_partials(client, many, red, data, shape, axes)
        if partials is not None:
            if partials.numblocks[-1] <= _fan_in(split_every, axes):
                final = functools.partial(_final_of_groups, red=red)
                return locality.combine_groups(partials, final, red.result_dtype(), red.extra_shape())
            raxes = (partials.ndim - 1,)  # kept dims, then one axis of groups
            if isinstance(split_every, dict):  # the groups stand for the reduced axes
                split_every = {raxes[0]: _fan_in(split_every, axes)}
        else:
            partials = da.blockwise(
                task, tuple(range(nd)), *locality.blockwise_pairs(data, nd),
                dtype=pdt, meta=np.empty((0,) * nd, pdt), align_arrays=True,
                adjust_chunks={i: 1 for i in axes},
                name=f"{kern.name}-{red.name}-partial-"
                + dask.base.tokenize(kern, red, data, kept, gpu),  # red: all its parameters
            )
            raxes = axes
    combined = da.reduction(
        partials, _as_is, functools.partial(_aggregate, red=red), axis=raxes, keepdims=False,
        dtype=pdt, split_every=split_every, combine=functools.partial(_combine, red=red),
        name=f"{kern.name}-{red.name}",  # meta: from _combine/_aggregate(computing_meta=True)
    )
    extra = red.extra_shape()
    return combined.map_blocks(
        _finalize, red=red, dtype=red.result_dtype(),
        new_axis=list(range(combined.ndim, combined.ndim + len(extra))) or None,
        chunks=(*combined.chunks, *((n,) for n in extra)),
        meta=np.empty((0,) * (combined.ndim + len(extra)), red.result_dtype()),
    )


def _partial_block(*blocks, kern: Kernel, red: Reduction, kept, gpu: bool) -> np.ndarray:
    """One task per chunk: the fused pass, returning this chunk's partial."""
    return partial_of_chunks([blocks], kern=kern, red=red, kept=kept, gpu=gpu)


def partial_of_chunks(chunks, *, kern: Kernel, red: Reduction, kept, gpu: bool) -> np.ndarray:
    """The fused pass over chunks that share their kept cells, into one partial.

    On CPU every chunk folds into the same state arrays: a worker reducing many chunks
    allocates them once (fresh memory is slow to fault in on some VMs).
    """
    state, parts, shape = None, [], ()
    for blocks in chunks:
        shape = np.broadcast_shapes(*(b.shape for b in blocks))
        blocks = [b.reshape((1,) * (len(shape) - b.ndim) + b.shape) for b in blocks]
        if gpu:
            parts.append(_cuda.chunk_partial(kern, red, blocks, kept))
        else:
            state = chunk_state(kern, red, blocks, kept, state)
    partial = red.combine(np.stack(parts), (0,))[0] if gpu else red.to_partial(state)
    return partial.reshape(tuple(n if k else 1 for n, k in zip(shape, kept, strict=True)))


_SPLIT_FIX = "e.g. split_every=8, or None for Dask's default."


def _split_every(value: Any) -> int | dict | None:
    """``split_every`` as Dask takes it: None, a whole number of at least 2, or {axis: number}
    (its axes are checked against the inputs by :func:`_split_axes`)."""
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            for k in value:
                checks.integer(k, "split_every")
        except PacklabError:
            raise bad_value("split_every", value, "a dict of axis: fan-in, its axes whole numbers",
                            "e.g. split_every={0: 8}.") from None
        return {int(k): checks.integer(v, "split_every", minimum=2, fix=_SPLIT_FIX) for k, v in value.items()}
    return checks.integer(value, "split_every", minimum=2, fix=_SPLIT_FIX)


def _split_axes(split_every: int | dict | None, nd: int) -> int | dict | None:
    """A ``split_every`` dict with its axes as Dask counts them (0 to ``nd - 1``); an axis
    the broadcast inputs lack, or one named twice, is an error (Dask ignores both)."""
    if not isinstance(split_every, dict):
        return split_every
    out: dict[int, int] = {}
    for a, n in split_every.items():
        if not -nd <= a < nd:
            has = "the inputs are 0-d (no axes): pass a number or None" if nd == 0 else (
                f"the broadcast inputs have {nd} dimension(s), so its keys are axes from {-nd} to {nd - 1}")
            raise PacklabError(f"split_every={split_every!r} is invalid: axis {a} does not exist; {has}.",
                               field="split_every", value=split_every)
        if a % nd in out:
            raise PacklabError(f"split_every={split_every!r} is invalid: axis {a % nd} is named twice. "
                               "Remove the repeat.", field="split_every", value=split_every)
        out[a % nd] = n
    return out


def _fan_in(split_every: int | dict | None, axes: tuple[int, ...]) -> int:
    """How many partials one combine task over ``axes`` takes (Dask's rule: ``split_every``,
    else the ``split_every`` config value, else 4; a dict's fan-ins multiply over the
    reduced axes, a reduced axis it does not name counting 2)."""
    if isinstance(split_every, dict):
        return max(2, math.prod(split_every.get(a, 2) for a in axes))
    return max(2, int(split_every or dask.config.get("split_every", 4)))


def _final_of_groups(parts: list[np.ndarray], red: Reduction) -> np.ndarray:
    """The grouped path's last step: fold the group partials, then finalize."""
    p = np.concatenate(parts, axis=-1)
    return red.finalize(red.combine(p, (p.ndim - 1,)).squeeze(axis=-1))


def _as_is(x, axis=None, keepdims=True, computing_meta=False):
    return x


def _combine(x, axis=None, keepdims=True, red: Reduction | None = None, computing_meta=False):
    if computing_meta or x.size == 0:  # dask's meta: an empty partial of the right rank
        return _empty_meta(x, axis, keepdims)
    return red.combine(x, tuple(axis))


def _aggregate(x, axis=None, keepdims=False, red: Reduction | None = None, computing_meta=False):
    if computing_meta or x.size == 0:
        return _empty_meta(x, axis, keepdims)
    out = red.combine(x, tuple(axis))
    return out if keepdims else out.squeeze(axis=tuple(axis))


def _empty_meta(x, axis, keepdims: bool) -> np.ndarray:
    # Dask asks the combine steps for their meta (an empty array); older dask (2024.10)
    # sums a meta of the wrong rank, which fails for a partial's structured dtype, so the
    # meta must have the right rank. A partial that is empty because a kept dim has
    # length 0 keeps that shape.
    axes = set(axis)
    if keepdims:
        shape = [1 if i in axes and n else n for i, n in enumerate(x.shape)]
    else:
        shape = [n for i, n in enumerate(x.shape) if i not in axes]
    return np.empty(shape, dtype=x.dtype)


def _finalize(p: np.ndarray, red: Reduction) -> np.ndarray:
    return red.finalize(p)


def _as_dask(x: Any, field: str) -> da.Array:
    """One input as a dask array of a dtype numba compiles (see :func:`.kernel.compute_dtype`),
    checked before any dask call that a bad one would fail with a raw error."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):  # lists, Python scalars (NumPy, CuPy pass)
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as e:
            raise PacklabError(f"{field}={x!r} is invalid: it is not an array ({e}). Pass a NumPy, "
                               "dask or xarray array, or a number.", field=field, value=x) from None
    dtype = compute_dtype(x.dtype, field)
    if isinstance(x, da.Array) and any(math.isnan(n) for n in x.shape):
        raise PacklabError(
            f"{field} has unknown chunk sizes (shape {x.shape}), which is invalid: packlab must "
            "know every chunk to broadcast and reduce. Call .compute_chunk_sizes() on it first "
            "(boolean-mask indexing makes them unknown).", field=field, value=x.shape)
    x = x if isinstance(x, da.Array) else da.asarray(x)
    return x if dtype == x.dtype else x.astype(dtype)  # big-endian, float16: chunk by chunk


def _axes(axis, dim, nd: int, dims: list[str] | None) -> tuple[int, ...]:
    """The reduced axes, sorted; as NumPy, an axis named twice or one the inputs lack is
    an error (a 0-d input has no axis 0)."""
    if dim is not None:
        if dims is None:
            raise PacklabError(f"dim={dim!r} needs DataArray inputs; with plain arrays use axis=.",
                               field="dim", value=dim)
        names = [dim] if isinstance(dim, str) else list(dim) if isinstance(dim, (list, tuple)) else None
        if names is None or not all(isinstance(n, str) for n in names):
            raise bad_value("dim", dim, "a dim name or a list of names",
                            f"The inputs have dims {tuple(dims)}.")
        for n in names:
            if n not in dims:
                raise PacklabError(f"dim={n!r} does not exist: the inputs have dims {tuple(dims)}; "
                                   "use one of them.", field="dim", value=n)
        if len(set(names)) < len(names):
            raise bad_value("dim", dim, "each dim named once", "Remove the repeated name.")
        return tuple(sorted({dims.index(n) for n in names}))
    if axis is None:
        return tuple(range(nd))
    items = [axis] if np.ndim(axis) == 0 else (
        list(axis) if isinstance(axis, (list, tuple, np.ndarray)) else None)
    out: list[int] = []
    for a in items if items is not None else [None]:
        try:
            a = checks.integer(a, "axis", minimum=-nd)
        except PacklabError:
            a = None
        if a is None or a >= nd:
            has = "a 0-d input has no axes: use axis=None" if nd == 0 else (
                f"the broadcast inputs have {nd} dimension(s), so axes are whole numbers "
                f"from {-nd} to {nd - 1}")
            raise PacklabError(f"axis={axis!r} is invalid: {has}.", field="axis", value=axis)
        if a % nd in out:
            raise PacklabError(f"axis={axis!r} is invalid: axis {a % nd} is named twice (as NumPy, "
                               "each axis once). Remove the repeat.", field="axis", value=axis)
        out.append(a % nd)
    return tuple(sorted(out))


def _labelled(arrays):
    """Align DataArrays exactly, order dims as xarray broadcasting does, expand each."""
    das = [a for a in arrays if isinstance(a, xr.DataArray)]
    try:
        aligned = iter(xr.align(*das, join="exact"))
    except ValueError as e:
        raise PacklabError(
            f"the DataArrays' coordinates do not match ({str(e).splitlines()[0]}): align them "
            "first, e.g. a, b = xr.align(a, b, join='inner')."
        ) from None
    dims: list[str] = []
    for a in das:
        dims += [d for d in a.dims if d not in dims]
    coords: dict[str, Any] = {}
    data = []
    for i, a in enumerate(arrays):
        field = f"arrays[{i}]"
        if isinstance(a, xr.DataArray):
            a = next(aligned)
            for name, c in a.coords.items():
                coords.setdefault(name, c.variable)
            x = _as_dask(a.transpose(*[d for d in dims if d in a.dims]).data, field)
            data.append(x[tuple(slice(None) if d in a.dims else None for d in dims)])
        else:
            data.append(_as_dask(a, field))
    return dims, coords, data


def _to_xarray(result, kern, red, dims, coords, axes, shape) -> xr.DataArray:
    kept_dims = [d for i, d in enumerate(dims) if i not in axes]
    keep = {n: c for n, c in coords.items() if set(c.dims) <= set(kept_dims)}
    out_dims = list(kept_dims)
    if red.extra_shape():
        out_dims.append("bin")
        edges = red.edges
        keep["bin"] = ("bin", (edges[:-1] + edges[1:]) / 2)
        keep["bin_lo"], keep["bin_hi"] = ("bin", edges[:-1]), ("bin", edges[1:])
    return xr.DataArray(result, dims=out_dims, coords=keep, name=f"{kern.name}_{red.name}")
