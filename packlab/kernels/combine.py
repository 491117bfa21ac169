"""A user-supplied combine ``f(a, b)`` with an identity, as a reduction.

Two spellings reach it: ``reduce=f, identity=x`` and ``reduce="custom", combine=f,
identity=x``. The combine is compiled once per function (see :func:`.kernel.kernel`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import checks
from ..errors import PacklabError, bad_value
from .reductions import Reduction, acc_dtype, register_reduction


@register_reduction
class Custom(Reduction):
    """A user-supplied associative, commutative combine ``f(a, b)`` with an identity."""

    name = "custom"
    fields = ("a",)
    params = ("ident",)

    def __init__(self, vtype, skipna=False, combine: Callable | None = None,
                 identity: Any = None, **options):
        super().__init__(vtype, skipna, **options)
        from .kernel import as_kernel

        if combine is None:
            raise PacklabError(
                "combine=None is invalid for reduce='custom': expected an associative, "
                "commutative function f(a, b) of two scalars, e.g. "
                "combine=lambda a, b: max(a, abs(b)), identity=0.0.", field="combine", value=None)
        if not callable(combine):
            raise bad_value("combine", combine, "a function f(a, b) of two scalars",
                            "e.g. combine=lambda a, b: max(a, abs(b)), identity=0.0.")
        if identity is None:
            raise PacklabError(
                "identity=None is invalid for a custom combine: expected the value x with "
                "f(x, v) == v for every v, e.g. identity=0.0 for a sum, -math.inf for a max.",
                field="identity", value=None)
        if checks.real(identity) is None or np.asarray(identity).dtype.kind not in "iuf":
            raise bad_value("identity", identity, "one real number (an int or float of at most 64 bits, "
                            "not a bool)", "e.g. identity=0.0 for a sum, -math.inf for a max.")
        self.func = as_kernel(combine, "combine")
        if self.func.nargs != 2:
            raise bad_value("combine", combine,
                            f"a function of two scalars f(a, b), not of {self.func.nargs}",
                            "e.g. combine=lambda a, b: a + b.")
        self.identity = identity
        adt = np.result_type(np.asarray(identity).dtype, acc_dtype(self.vtype))
        self.adt = np.dtype(adt)
        rt = self.func.result_dtype([self.adt, self.vtype])
        if rt.kind not in "biuf":
            raise PacklabError(f"combine {self.func.name!r} must return a number, not {rt}.")

    def key(self):
        return (*super().key(), self.func.uid)

    def state_dtype(self):
        return np.dtype([("a", self.adt)])

    def globals(self):
        return {"comb": self.func.cpu}

    def device_globals(self):
        return {"comb": self.func.cuda}

    def init_locals(self):
        return ["l_a = p_ident"]

    def update_local(self):
        return self.guarded(["l_a = comb(l_a, v)"])

    def flush(self):
        return ["s_a[o] = comb(s_a[o], l_a)"]

    def param_values(self):
        return (np.array(self.identity, self.adt)[()],)

    def init_state(self, cells):
        return {"a": np.full(cells, self.identity, self.adt)}

    def combine_field(self, field, x, axis):
        x = np.moveaxis(x, axis, tuple(range(-len(axis), 0)))
        lead = x.shape[: x.ndim - len(axis)]
        flat = x.reshape((*lead, -1))
        acc = np.full(lead, self.identity, self.adt)
        uf = self.func.ufunc([self.adt, self.adt])
        for j in range(flat.shape[-1]):
            acc = uf(acc, flat[..., j]).astype(self.adt)
        return np.expand_dims(acc, axis)

    def result_dtype(self):
        return self.adt

    def finalize(self, p):
        return p["a"].copy()
