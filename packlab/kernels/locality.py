"""Locality-aware task grouping for distributed clusters.

On a distributed cluster each task costs a few milliseconds of scheduler and worker
overhead (more on a small, busy machine, where the scheduler competes with the
workers for cores). A fused chunk pass over 128 MiB takes about as long, so one task
per chunk wastes much of the time. When the inputs already live on the workers
(persisted), the chunks each worker holds are processed by as many tasks as it has
threads: each task loops over its chunks and returns one partial. Every task's
inputs are on one worker, so the scheduler runs it there and nothing is moved.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.highlevelgraph import HighLevelGraph


def active_client():
    """The distributed Client that ``.compute()`` would use now, or ``None``.

    The one place that looks up the default client (task grouping here, GPU detection
    in :mod:`.cuda`): a client that exists while another scheduler is configured (e.g.
    ``dask.config.set(scheduler="sync")``) does not run the graph, so it is ignored.
    Public API only: :func:`distributed.default_client` and the ``scheduler`` setting of
    ``dask.config``, which a default Client sets to ``"dask.distributed"``.

    Examples
    --------
    >>> with dask.config.set(scheduler="sync"):
    ...     active_client() is None
    True
    """
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return None
    chosen = dask.config.get("scheduler", None)
    if chosen is None or chosen in ("dask.distributed", "distributed"):
        return client
    if chosen is client or getattr(chosen, "__self__", None) is client:  # scheduler=client or client.get
        return client
    return None


def blockwise_pairs(data: list[da.Array], nd: int) -> list[Any]:
    """``(array, index)`` pairs for :func:`dask.array.blockwise`: every input aligned to
    the trailing dims of the ``nd``-dim broadcast shape, as NumPy broadcasting does.

    Examples
    --------
    >>> [ix for ix in blockwise_pairs([da.ones((2, 3)), da.ones(3)], 2)[1::2]]
    [(0, 1), (1,)]
    """
    pairs: list[Any] = []
    for x in data:
        pairs += [x, tuple(range(nd - x.ndim, nd))]
    return pairs


def grouped_partials(client, many, red, data: list[da.Array], shape, axes) -> da.Array | None:
    """Partials with one task per worker thread (kept dims, then a group axis), or
    ``None`` when grouping would not help or the data are not on the workers yet.

    ``many(chunks)`` is the fused pass over a list of chunks (each a list of input
    blocks) that share their kept cells, returning one partial.
    """
    pdt = red.partial_dtype()
    nd = len(shape)
    chunkss, arrays = da.core.unify_chunks(*blockwise_pairs(data, nd))
    numblocks = [len(chunkss[i]) for i in range(nd)]
    kept_dims = [i for i in range(nd) if i not in axes]
    workers = client.scheduler_info(n_workers=-1)["workers"]
    threads = {w: max(1, int(info.get("nthreads", 1))) for w, info in workers.items()}
    n_reduced = math.prod(numblocks[i] for i in axes)
    if not threads or n_reduced <= 2 * sum(threads.values()):
        return None

    big = max(range(len(arrays)), key=lambda j: arrays[j].size)

    def keys(idx):
        out = []
        for a in arrays:
            off = nd - a.ndim
            out.append((a.name, *[idx[off + k] if a.numblocks[k] > 1 else 0 for k in range(a.ndim)]))
        return out

    every = list(itertools.product(*(range(n) for n in numblocks)))
    who = client.who_has(arrays[big])  # its futures, when it is persisted
    home = {i: (who.get(keys(i)[big]) or [None])[0] for i in every}
    if any(w not in threads for w in home.values()):
        return None  # not persisted: per-chunk tasks fuse with whatever makes the data

    plan = {}
    for kidx in itertools.product(*(range(numblocks[i]) for i in kept_dims)):
        by_worker = defaultdict(list)
        for idx in every:
            if all(idx[d] == kidx[n] for n, d in enumerate(kept_dims)):
                by_worker[home[idx]].append(keys(idx))
        groups = []
        for w, chunks in sorted(by_worker.items()):
            parts = min(threads[w], len(chunks))
            groups += [[chunks[i] for i in part] for part in np.array_split(np.arange(len(chunks)), parts)]
        plan[kidx] = groups
    n_groups = max(len(g) for g in plan.values())

    name = "group-partial-" + dask.base.tokenize(many, red, *[a.name for a in arrays], plan)
    dsk = {}
    for kidx, groups in plan.items():
        cells = tuple(chunkss[d][kidx[n]] for n, d in enumerate(kept_dims))
        fn = functools.partial(_group, many=many, red=red, cells=cells)
        for g in range(n_groups):
            dsk[(name, *kidx, g)] = (fn, groups[g] if g < len(groups) else [])
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=arrays)
    chunks = (*(chunkss[d] for d in kept_dims), (1,) * n_groups)
    return da.Array(graph, name, chunks=chunks, dtype=pdt, meta=np.empty((0,) * len(chunks), pdt))


def combine_groups(partials: da.Array, final, dtype: np.dtype, extra: tuple[int, ...]) -> da.Array:
    """One task per kept block that folds the block's group partials and finalizes them.

    For a small fan-in (the usual case: one group per worker thread) this replaces
    Dask's tree reduction, whose chunk, aggregate and finalize steps each cost a
    scheduler round trip: here the partials go straight from the group tasks into the
    one task that makes the answer. ``final(parts)`` takes the list of the block's
    group partials (each with a trailing group axis of length 1).
    """
    name = "combine-groups-" + dask.base.tokenize(partials.name, final, dtype, extra)
    n_groups = partials.numblocks[-1]
    dsk = {
        (name, *kidx, *(0,) * len(extra)): (final, [(partials.name, *kidx, g) for g in range(n_groups)])
        for kidx in itertools.product(*(range(n) for n in partials.numblocks[:-1]))
    }
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[partials])
    chunks = (*partials.chunks[:-1], *((n,) for n in extra))
    return da.Array(graph, name, chunks=chunks, dtype=dtype, meta=np.empty((0,) * len(chunks), dtype))


def _group(chunks: list[list[np.ndarray]], many, red, cells: tuple[int, ...]) -> np.ndarray:
    """One group's partial; a group with no chunks (padding) gives the identity."""
    if not chunks:
        return red.to_partial(red.init_state(math.prod(cells))).reshape((*cells, 1))
    return many(chunks).reshape((*cells, 1))
