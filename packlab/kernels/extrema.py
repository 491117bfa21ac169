"""Extrema: ``min`` and ``max``, with NumPy's NaN rules (NaN wins unless ``skipna``)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .reductions import Reduction, register_reduction


class _Extremum(Reduction):
    fields = ("m", "n")
    empty_error = True
    op: ClassVar[str]  # "<" for min, ">" for max

    def state_dtype(self):
        return np.dtype([("m", self.vtype if self.vtype.kind != "b" else "u1"), ("n", "i8")])

    def identity(self):
        big = np.inf if self.vtype.kind == "f" else np.iinfo(self.state_dtype()["m"]).max
        if self.vtype.kind == "b":
            big = 1
        return big if self.op == "<" else (-big if self.vtype.kind == "f" else
                                           np.iinfo(self.state_dtype()["m"]).min)

    def init_locals(self):
        return [f"l_m = p_{self.name}id", "l_n = 0"]

    def update_local(self):
        better = f"v {self.op} l_m" + (" or v != v" if self.vtype.kind == "f" and not self.skipna else "")
        return self.guarded([f"if {better}:", "    l_m = v", "l_n += 1"])

    def flush(self):
        better = f"l_m {self.op} s_m[o]" + (
            " or l_m != l_m" if self.vtype.kind == "f" and not self.skipna else "")
        return [f"if {better}:", "    s_m[o] = l_m", "s_n[o] += l_n"]

    def param_values(self):
        return (np.array(self.identity(), self.state_dtype()["m"])[()],)

    def init_state(self, cells):
        st = super().init_state(cells)
        st["m"][:] = self.identity()
        return st

    def combine_field(self, field, x, axis):
        if field == "n":
            return x.sum(axis=axis, keepdims=True)
        pick = np.fmin if self.op == "<" else np.fmax  # states hold NaN only when it counts
        if self.vtype.kind == "f" and not self.skipna:
            pick = np.minimum if self.op == "<" else np.maximum
        return pick.reduce(x, axis=axis, keepdims=True)

    def result_dtype(self):
        return self.vtype

    def finalize(self, p):
        m = p["m"].astype(self.vtype)
        if self.vtype.kind == "f":
            m = np.where(p["n"] > 0, m, np.nan).astype(self.vtype)  # all-NaN cell
        return m


@register_reduction
class Min(_Extremum):
    name = "min"
    op = "<"
    params = ("minid",)


@register_reduction
class Max(_Extremum):
    name = "max"
    op = ">"
    params = ("maxid",)
