"""Reductions: each is a registry entry with a partial state, fused loop code, an
associative combine and a finalize.

A reduction runs in three places. Inside the compiled chunk loop it updates *state
arrays* (one slot per output cell) from the kernel's value ``v``; the loop source is
generated from the snippets below, so the kernel's value is never stored. The chunk's
state becomes a small structured NumPy *partial*; partials are combined in a tree
(:meth:`Reduction.combine`, associative) and the last one is turned into the answer
(:meth:`Reduction.finalize`). Variance uses shifted sums within a chunk and Chan et
al.'s pairwise update across chunks, so it stays accurate on ill-conditioned data.

Names the snippets may use: ``v`` (the kernel's value), ``o`` (the output cell),
``s_<field>`` (state arrays), ``l_<field>`` (per-cell locals of an inner loop),
``p_<name>`` (parameters, passed as arguments).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import PacklabError

REDUCTIONS: dict[str, type[Reduction]] = {}


def register_reduction(cls: type[Reduction]) -> type[Reduction]:
    """Class decorator: make ``reduce=cls.name`` available to :func:`packlab.mapreduce`.

    Examples
    --------
    >>> @register_reduction
    ... class SumAbs(Sum):
    ...     name = "sumabs"
    ...
    ...     def update_local(self):
    ...         return self.guarded(["l_s += abs(v)"])
    >>> import packlab
    >>> int(packlab.mapreduce(lambda x: x, np.array([-1, 2, -3]), reduce="sumabs").compute())
    6
    """
    REDUCTIONS[cls.name] = cls
    return cls


def acc_dtype(vtype: np.dtype) -> np.dtype:
    """Accumulate floats in float64, signed ints and bools in int64, unsigned in uint64."""
    return np.dtype({"f": "f8", "u": "u8"}.get(vtype.kind, "i8"))


class Reduction:
    """One reduction; subclasses fill the class attributes and the state arithmetic."""

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]  # state arrays, in argument order
    params: ClassVar[tuple[str, ...]] = ()  # extra loop arguments, p_<name>
    needs_shift: ClassVar[bool] = False  # var: s_k[o] set by a pre-pass
    uses_locals: ClassVar[bool] = True  # may accumulate an inner loop in locals
    empty_error: ClassVar[bool] = False  # min/max of nothing has no answer
    additive: ClassVar[bool] = False  # partial states combine by adding every field

    def __init__(self, vtype: np.dtype, skipna: bool = False, **options: Any):
        if options:
            raise PacklabError(
                f"{', '.join(f'{k}=' for k in options)} is not an option of reduce={self.name!r}."
                f" Remove it (options by reduction: ddof for var/std, bins/range for histogram,"
                " identity for a custom combine)."
            )
        self.vtype = np.dtype(vtype)
        self.skipna = bool(skipna) and self.vtype.kind == "f"

    # -- description --------------------------------------------------------
    def key(self) -> tuple:
        """What the generated loop depends on (the compile-cache key)."""
        return (self.name, self.vtype.str, self.skipna, str(self.state_dtype()))

    def state_dtype(self) -> np.dtype:
        a = acc_dtype(self.vtype)
        return np.dtype([(f, a) for f in self.fields])

    def partial_dtype(self) -> np.dtype:
        return self.state_dtype()

    def result_dtype(self) -> np.dtype:
        raise NotImplementedError

    def extra_shape(self) -> tuple[int, ...]:
        """Trailing axes the result adds (the histogram's bins)."""
        return ()

    def param_values(self) -> tuple:
        return ()

    def globals(self) -> dict[str, Any]:
        """Objects the generated loop refers to by name, besides the kernel."""
        return {}

    # -- loop snippets --------------------------------------------------------
    def init_locals(self) -> list[str]:
        zero = "0.0" if acc_dtype(self.vtype).kind == "f" else "0"
        return [f"l_{f} = {zero}" for f in self.fields]

    def update_local(self) -> list[str]:
        raise NotImplementedError

    def flush(self) -> list[str]:
        return [f"s_{f}[o] += l_{f}" for f in self.fields]

    def update_state(self) -> list[str]:
        """The same update, straight into the state (when no inner loop is reduced)."""
        return [_to_state(line, self.fields) for line in self.update_local()]

    def guarded(self, lines: list[str]) -> list[str]:
        """Skip NaN values when ``skipna`` (floats only: ints have no NaN)."""
        if not self.skipna:
            return lines
        return ["if v == v:", *("    " + x for x in lines)]

    # -- the CUDA kernel's variants (one thread owns a cell's partial) ---------
    def device_init_locals(self) -> list[str]:
        return self.init_locals()

    def device_update_local(self) -> list[str]:
        return self.update_local()

    def device_globals(self) -> dict[str, Any]:
        return {}

    def device_partial(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """Per-thread states -> partials (they already share the layout of a chunk's)."""
        return self.to_partial(state)

    # -- state arithmetic (NumPy, on small arrays) ----------------------------
    def init_state(self, cells: int) -> dict[str, np.ndarray]:
        dt = self.state_dtype()
        return {f: np.zeros((cells, *dt[f].shape), dt[f].base) for f in dt.names}

    def to_partial(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """Chunk state -> partial (structured array, one record per cell)."""
        first = next(iter(state.values()))
        out = np.empty(first.shape[:1], self.partial_dtype())
        for f in self.partial_dtype().names:
            out[f] = state[f]
        return out

    def combine(self, p: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
        """Combine partials along ``axis`` (kept as length 1). Must be associative."""
        out = np.empty(_squeezed(p.shape, axis), p.dtype)
        for f in p.dtype.names:
            out[f] = self.combine_field(f, p[f], axis)
        return out

    def combine_field(self, field: str, x: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
        return x.sum(axis=axis, keepdims=True)

    def finalize(self, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _to_state(line: str, fields: tuple[str, ...]) -> str:
    for f in fields:
        line = line.replace(f"l_{f}", f"s_{f}[o]")
    return line


def _squeezed(shape: tuple[int, ...], axis: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axis else n for i, n in enumerate(shape))


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
    """How many values are non-zero (a boolean kernel is a predicate); NaN counts
    unless ``skipna``."""

    name = "count"
    fields = ("n",)
    additive = True

    def state_dtype(self):
        return np.dtype([("n", "i8")])

    def init_locals(self):
        return ["l_n = 0"]

    def update_local(self):
        return self.guarded(["if v != 0:", "    l_n += 1"])

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
        if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
            raise PacklabError(f"ddof={ddof!r} is invalid: expected a whole number, 0 or more.")
        self.ddof = int(ddof)

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
        with np.errstate(invalid="ignore", divide="ignore"):
            dof = p["n"] - self.ddof
            v = np.where(dof > 0, np.maximum(p["m2"], 0.0) / np.maximum(dof, 1), np.nan)
            v = np.where(np.isnan(p["m2"]), np.nan, v)
        return v.astype(self.result_dtype())


@register_reduction
class Std(Var):
    name = "std"

    def finalize(self, p):
        return np.sqrt(super().finalize(p))


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


def make_reduction(reduce: Any, vtype: np.dtype, skipna: bool, options: dict[str, Any]) -> Reduction:
    """Resolve ``reduce=`` (a name, or a combine function with ``identity=``).

    Examples
    --------
    >>> make_reduction("sum", np.dtype("float32"), False, {}).result_dtype()
    dtype('float32')
    """
    from . import histogram  # noqa: F401  (registers "histogram")

    if isinstance(reduce, str):
        if reduce not in REDUCTIONS:
            raise PacklabError(
                f"reduce={reduce!r} is unknown: choose one of {sorted(REDUCTIONS)}, or pass an "
                "associative combine function f(a, b) with identity=."
            )
        return REDUCTIONS[reduce](vtype, skipna, **options)
    if callable(reduce):
        from .combine import Custom

        return Custom(vtype, skipna, combine=reduce, **options)
    raise PacklabError(
        f"reduce={reduce!r} is invalid: expected a reduction name such as 'sum', or a "
        "combine function f(a, b) with identity=."
    )
