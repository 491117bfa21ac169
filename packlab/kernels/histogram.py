"""``reduce="histogram"``: counts per bin for every kept cell, with NumPy's bin rules.

Binning follows :func:`numpy.histogram` exactly: with ``bins=N, range=(lo, hi)`` the
edges are ``np.linspace(lo, hi, N + 1)`` in the data's result type (float32 data and
Python-number ranges give float32 edges) and every value is compared with those edges
in that type; the last bin is closed; NaN and values outside the range are ignored;
booleans count as 0 and 1. A value's bin is guessed arithmetically, clamped to
``[0, N)``, then corrected by one step against the edges (NumPy's own rule); the guess
is only made where it is finite (a range of subnormal width bisects the edges), so no
input (a range narrower than a float's resolution, values on the edges, infinities,
NaN) can give an index outside ``[0, N)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import checks
from ..errors import PacklabError
from .reductions import Reduction, register_reduction


@register_reduction
class Histogram(Reduction):
    """Counts per bin, as :func:`numpy.histogram` (last bin closed, NaN and values
    outside the range ignored); ``bins`` is a count with ``range=``, or the edges."""

    name = "histogram"
    fields = ("c",)
    additive = True
    params = ("edges", "lo", "norm", "nb", "uniform")
    uses_locals = False

    def __init__(self, vtype, skipna=False, bins=None, range=None, **options):
        super().__init__(vtype, skipna, **options)
        self.edges, self.uniform = bin_edges(bins, range, self.vtype)
        self.nb = len(self.edges) - 1
        if self.uniform and not np.isfinite(self._norm()):  # a range of subnormal width: bisect
            self.uniform = False

    def key(self):  # the edges are a loop argument: one compiled loop for every range
        return (*super().key(), self.nb, self.uniform, self.edges.dtype.str)

    def state_dtype(self):
        return np.dtype([("c", "i8", (self.nb,))])

    def globals(self):
        return {"bt": self.edges.dtype.type}  # the edges' type: values are compared in it

    def device_globals(self):
        return self.globals()

    def update_state(self):
        convert = "x = 1.0 if v else 0.0" if self.vtype.kind == "b" else "x = bt(v)"
        return [
            convert,
            "if x >= p_edges[0] and x <= p_edges[p_nb]:",  # False for NaN
            "    if p_uniform:",
            "        f = (float(x) - p_lo) * p_norm",  # 0 <= f (finite: see __init__); clamp first
            "        b = int(f) if f < p_nb else p_nb - 1",
            "        if x < p_edges[b]:",  # NumPy's one-step correction; b > 0 here as x >= edges[0]
            "            b -= 1",
            "        elif b < p_nb - 1 and x >= p_edges[b + 1]:",
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

    def _norm(self) -> float:
        with np.errstate(all="ignore"):
            return float(self.nb / (np.float64(self.edges[-1]) - np.float64(self.edges[0])))

    def param_values(self):
        return (self.edges, float(self.edges[0]), self._norm() if self.uniform else 0.0, self.nb,
                self.uniform)

    def extra_shape(self):
        return (self.nb,)

    def result_dtype(self):
        return np.dtype("i8")

    def finalize(self, p):
        return p["c"].copy()


def bin_edges(bins: Any, range_: Any, vtype: np.dtype) -> tuple[np.ndarray, bool]:
    """The bin edges NumPy would use for values of ``vtype``, and whether they are uniform.

    Examples
    --------
    >>> bin_edges(2, (0, 1), np.dtype("float32"))
    (array([0. , 0.5, 1. ], dtype=float32), True)
    >>> bin_edges([0, 1, 3], None, np.dtype("int64"))[0]
    array([0., 1., 3.])
    """
    if bins is None:
        raise PacklabError(
            "bins=None is invalid for reduce='histogram': expected a number of bins with "
            "range=(lo, hi), e.g. bins=10, range=(0, 1), or an increasing array of bin edges.",
            field="bins", value=None)
    if isinstance(bins, str):
        raise PacklabError(
            f"bins={bins!r} is invalid: expected a number of bins with range=(lo, hi), or an "
            "increasing array of bin edges. packlab does not scan the data for a range "
            "(NumPy's estimators such as 'auto'); give the range of interest.", field="bins", value=bins)
    if np.ndim(bins) == 0:
        nb = checks.integer(bins, "bins", minimum=1, fix="e.g. bins=10, range=(0, 1).")
        return _uniform(nb, range_, vtype), True
    try:
        edges = np.asarray(bins, dtype=np.float64)
    except (TypeError, ValueError):
        edges = np.array([np.nan])
    if edges.ndim != 1 or edges.size < 2 or np.isnan(edges).any() or np.any(edges[1:] < edges[:-1]):
        raise PacklabError(
            f"bins={bins!r} is invalid: expected a 1-D array of at least 2 increasing bin "
            "edges (no NaN), e.g. bins=[0, 1, 2.5], or a number of bins with range=(lo, hi).",
            field="bins", value=bins)
    if range_ is not None:
        raise PacklabError(
            f"range={range_!r} is invalid with bin edges: it is only used with a number of "
            "bins. Remove range= or pass bins=N.", field="range", value=range_)
    return edges, False


def _uniform(nb: int, range_: Any, vtype: np.dtype) -> np.ndarray:
    if (range_ is None or np.shape(range_) != (2,)
            or any(checks.real(r) is None for r in range_)):  # bools are not numbers here
        raise PacklabError(
            f"range={range_!r} is invalid: expected two real numbers (lo, hi) with bins={nb}, "
            "e.g. range=(0, 1). packlab does not scan the data first to find it; give the "
            "range of interest.", field="range", value=range_)
    lo, hi = range_
    if not (math.isfinite(checks.real(lo)) and math.isfinite(checks.real(hi))):
        raise PacklabError(f"range={range_!r} is invalid: expected finite lo and hi, e.g. range=(0, 1).",
                           field="range", value=range_)
    if lo > hi:
        raise PacklabError(f"range={range_!r} is invalid: expected lo <= hi; swap them.",
                           field="range", value=range_)
    if lo == hi:  # NumPy widens an empty range by half a unit each way
        lo, hi = lo - 0.5, hi + 0.5
    # NumPy's rule: the result type of lo, hi and the data (bool counts as uint8), at least float
    btype = np.result_type(lo, hi, np.empty(0, "u1" if vtype.kind == "b" else vtype))
    if btype.kind != "f":
        btype = np.result_type(btype, float)
    with np.errstate(all="ignore"):
        edges = np.linspace(lo, hi, nb + 1, endpoint=True, dtype=btype)
        width = float(edges[-1]) - float(edges[0])
    if not (np.all(np.isfinite(edges)) and np.all(edges[1:] > edges[:-1]) and np.isfinite(width)):
        raise PacklabError(
            f"range={range_!r} with bins={nb} is invalid: {nb} finite bins of increasing edges "
            f"do not fit in {btype} (the range is too narrow for its resolution, or its width "
            "overflows). Use fewer bins or a range of moderate width, or compute in float64.",
            field="range", value=range_)
    return edges
