"""``reduce="histogram"``: counts per bin for every kept cell, with NumPy's bin rules."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import PacklabError
from .reductions import Reduction, register_reduction, whole


@register_reduction
class Histogram(Reduction):
    """Counts per bin, as :func:`numpy.histogram` (last bin closed, NaN and values
    outside the range ignored); ``bins`` is a count with ``range=``, or the edges."""

    name = "histogram"
    fields = ("c",)
    additive = True
    params = ("edges", "lo", "hi", "norm", "nb", "uniform")
    uses_locals = False

    def __init__(self, vtype, skipna=False, bins=None, range=None, **options):
        super().__init__(vtype, skipna, **options)
        self.edges, self.uniform = _edges(bins, range)
        self.nb = len(self.edges) - 1

    def key(self):  # the edges are a loop argument: one compiled loop for every range
        return (*super().key(), self.nb, self.uniform)

    def state_dtype(self):
        return np.dtype([("c", "i8", (self.nb,))])

    def update_state(self):
        return [
            "x = float(v)",
            "if x >= p_lo and x <= p_hi:",
            "    if p_uniform:",
            "        b = int((x - p_lo) * p_norm)",
            "        if b >= p_nb:",
            "            b = p_nb - 1",
            "        if x < p_edges[b]:",
            "            b -= 1",
            "        elif b != p_nb - 1 and x >= p_edges[b + 1]:",
            "            b += 1",
            "    else:",
            "        b = 0",  # bisect by hand: the CUDA target has no searchsorted
            "        hi = p_nb",
            "        while hi - b > 1:",
            "            mid = (b + hi) // 2",
            "            if p_edges[mid] <= x:",
            "                b = mid",
            "            else:",
            "                hi = mid",
            "    s_c[o, b] += 1",
        ]

    def param_values(self):
        lo, hi = float(self.edges[0]), float(self.edges[-1])
        return (self.edges, lo, hi, self.nb / (hi - lo), self.nb, self.uniform)

    def extra_shape(self):
        return (self.nb,)

    def result_dtype(self):
        return np.dtype("i8")

    def finalize(self, p):
        return p["c"].copy()


def _edges(bins: Any, range_: Any) -> tuple[np.ndarray, bool]:
    if bins is None:
        raise PacklabError(
            "reduce='histogram' needs bins=: a number of bins with range=(lo, hi), "
            "or an increasing array of bin edges."
        )
    if np.ndim(bins) == 0:
        bins = whole(bins, "bins", minimum=1)
        if range_ is None or np.shape(range_) != (2,):
            raise PacklabError(
                f"range={range_!r} is invalid: expected (lo, hi) with bins={bins}. packlab does "
                "not scan the data first to find it; give the range of interest."
            )
        lo, hi = (float(r) for r in range_)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise PacklabError(f"range={range_!r} is invalid: expected finite lo < hi.")
        return np.linspace(lo, hi, int(bins) + 1), True
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise PacklabError(
            f"bins={bins!r} is invalid: expected an increasing 1-D array of at least 2 edges."
        )
    if range_ is not None:
        raise PacklabError("range= is only used with a number of bins; remove it or pass bins=N.")
    return edges, False
