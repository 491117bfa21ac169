"""Sums and moments: ``sum``, ``count``, ``mean``, ``var`` and ``std``.

Variance uses shifted sums within a chunk and Chan et al.'s pairwise update across
chunks, so it stays accurate on ill-conditioned data (a large mean, a small spread).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .. import checks
from .reductions import Reduction, register_reduction


@register_reduction
class Sum(Reduction):
    name = "sum"
    additive = True
    fields = ("s",)

    def update_local(self):
        return self.guarded(["l_s += v"])

    def result_dtype(self):
        return np.zeros(1, self.vtype).sum().dtype

    def finalize(self, p):
        return p["s"].astype(self.result_dtype())


@register_reduction
class Count(Reduction):
    """How many valid values the kernel gives: every value except NaN, as xarray's
    ``count()`` (and pandas'), whatever ``skipna`` says. Zeros and ``False`` count too:
    to count where a boolean kernel (a predicate) holds, use ``reduce="sum"``."""

    name = "count"
    fields = ("n",)
    additive = True

    def __init__(self, vtype, skipna=False, **options):
        super().__init__(vtype, skipna, **options)
        if self.vtype.kind == "b":
            import warnings

            from ..errors import PacklabWarning

            warnings.warn(
                "reduce='count' of a boolean kernel is the number of values (count counts valid "
                "values, as xarray's count()), not where it is True: for that use reduce='sum'.",
                PacklabWarning, stacklevel=4)

    def state_dtype(self):
        return np.dtype([("n", "i8")])

    def init_locals(self):
        return ["l_n = 0"]

    def update_local(self):
        if self.vtype.kind == "f":  # NaN is never a valid value
            return ["if v == v:", "    l_n += 1"]
        return ["l_n += 1"]

    def result_dtype(self):
        return np.dtype("i8")

    def finalize(self, p):
        return p["n"].copy()


@register_reduction
class Mean(Reduction):
    name = "mean"
    additive = True
    fields = ("s", "n")

    def state_dtype(self):
        return np.dtype([("s", "f8"), ("n", "i8")])

    def init_locals(self):
        return ["l_s = 0.0", "l_n = 0"]

    def update_local(self):
        return self.guarded(["l_s += v", "l_n += 1"])

    def result_dtype(self):
        return np.zeros(1, self.vtype).mean().dtype

    def finalize(self, p):
        with np.errstate(invalid="ignore", divide="ignore"):
            return (p["s"] / p["n"]).astype(self.result_dtype())


@register_reduction
class Var(Reduction):
    """Variance: shifted sums in the chunk loop, Chan's parallel update across chunks."""

    name = "var"
    fields = ("n", "s1", "s2", "k")
    needs_shift = True

    def __init__(self, vtype, skipna=False, ddof: int = 0, **options):
        super().__init__(vtype, skipna, **options)
        self.ddof = checks.integer(ddof, "ddof", minimum=0, fix="e.g. ddof=1 for the sample variance.")

    def state_dtype(self):
        return np.dtype([("n", "i8"), ("s1", "f8"), ("s2", "f8"), ("k", "f8")])

    def partial_dtype(self):
        return np.dtype([("n", "i8"), ("mean", "f8"), ("m2", "f8")])

    def init_locals(self):
        return ["l_n = 0", "l_s1 = 0.0", "l_s2 = 0.0", "l_k = s_k[o]"]

    _body: ClassVar[list[str]] = ["d = v - l_k", "l_n += 1", "l_s1 += d", "l_s2 += d * d"]

    def update_local(self):
        return self.guarded(self._body)

    def flush(self):
        return ["s_n[o] += l_n", "s_s1[o] += l_s1", "s_s2[o] += l_s2"]

    def device_init_locals(self):
        return ["l_n = 0", "l_s1 = 0.0", "l_s2 = 0.0", "l_k = 0.0"]

    def device_update_local(self):
        # Each thread shifts by its own first value: no pre-pass, and the partials
        # still combine exactly (to_partial turns each into count, mean, M2).
        return self.guarded(["if l_n == 0:", "    l_k = float(v)", *self._body])

    def to_partial(self, state):
        n, s1, s2, k = state["n"], state["s1"], state["s2"], state["k"]
        out = np.empty(n.shape, self.partial_dtype())
        safe = np.maximum(n, 1)
        out["n"] = n
        out["mean"] = np.where(n > 0, k + s1 / safe, 0.0)
        out["m2"] = np.where(n > 0, s2 - s1 * s1 / safe, 0.0)
        return out

    def combine(self, p, axis):
        n, mean, m2 = p["n"], p["mean"], p["m2"]
        total = n.sum(axis=axis, keepdims=True)
        safe = np.maximum(total, 1)
        # Chan et al.: the combined mean, then each part's M2 plus its spread about it.
        # A NaN part (skipna=False) must poison the result, so no masking of means here.
        with np.errstate(invalid="ignore"):
            w = np.where(n > 0, n, 0)
            contrib = np.where(n > 0, mean, 0.0) * w
            nan_part = np.isnan(mean) & (n > 0)
            cmean = contrib.sum(axis=axis, keepdims=True) / safe
            dev = np.where(n > 0, mean - cmean, 0.0)
            cm2 = (np.where(n > 0, m2, 0.0) + w * dev * dev).sum(axis=axis, keepdims=True)
            poisoned = nan_part.any(axis=axis, keepdims=True)
        out = np.empty(total.shape, p.dtype)
        out["n"] = total
        out["mean"] = np.where(poisoned, np.nan, cmean)
        out["m2"] = np.where(poisoned, np.nan, cm2)
        return out

    def result_dtype(self):
        return np.zeros(1, self.vtype).mean().dtype

    def finalize(self, p):
        # With no degrees of freedom left (ddof >= n) NumPy's two disagree and packlab
        # follows each: np.var divides by zero (inf, or NaN for 0/0), np.nanvar gives NaN.
        with np.errstate(invalid="ignore", divide="ignore"):
            dof = p["n"] - self.ddof
            m2 = np.maximum(p["m2"], 0.0)
            v = m2 / np.maximum(dof, 0)
            if self.skipna:
                v = np.where(dof > 0, v, np.nan)
            v = np.where(np.isnan(p["m2"]), np.nan, v)
        return v.astype(self.result_dtype())


@register_reduction
class Std(Var):
    name = "std"

    def finalize(self, p):
        return np.sqrt(super().finalize(p))
