"""Reductions: the :class:`Reduction` base class and the ``reduce=`` registry.

Each reduction is a registry entry with a partial state, fused loop code, an
associative combine and a finalize. The concrete ones live in :mod:`.moments` (sum,
count, mean, var, std), :mod:`.extrema` (min, max), :mod:`.histogram` and
:mod:`.combine` (a user's combine function).

A reduction runs in three places. Inside the compiled chunk loop it updates *state
arrays* (one slot per output cell) from the kernel's value ``v``; the loop source is
generated from the snippets below, so the kernel's value is never stored. The chunk's
state becomes a small structured NumPy *partial*; partials are combined in a tree
(:meth:`Reduction.combine`, associative) and the last one is turned into the answer
(:meth:`Reduction.finalize`).

Names the snippets may use: ``v`` (the kernel's value), ``o`` (the output cell),
``s_<field>`` (state arrays), ``l_<field>`` (per-cell locals of an inner loop),
``p_<name>`` (parameters, passed as arguments).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .. import checks
from ..errors import PacklabError, bad_value
from ..plugins import Registry
from .codegen import locals_to_state

#: The ``reduce=`` names: the built-in ones register in code (``@register_reduction``),
#: others also through the entry-point group ``packlab.reductions``.
REDUCTIONS: Registry[type[Reduction]] = Registry(
    "reduction", "packlab.reductions", fix="Or pass an associative combine function f(a, b) with identity=.")

SKIPNA_FIX = "Pass skipna=True or skipna=False."


def register_reduction(cls: type[Reduction]) -> type[Reduction]:
    """Class decorator: make ``reduce=cls.name`` available to :func:`packlab.mapreduce`.

    Examples
    --------
    >>> from packlab.kernels.moments import Sum
    >>> @register_reduction
    ... class SumAbs(Sum):
    ...     name = "sumabs"
    ...
    ...     def update_local(self):
    ...         return self.guarded(["l_s += abs(v)"])
    >>> import packlab
    >>> int(packlab.mapreduce(lambda x: x, np.array([-1, 2, -3]), reduce="sumabs").compute())
    6

    The class is checked here, not when it first runs: it must subclass
    :class:`Reduction` and name itself (``name``, a new name: the built-in ones cannot be
    replaced) and its state (``fields``, ``params``: distinct identifiers). Its snippets
    are rewritten on their syntax tree (:mod:`.codegen`), so any field names work, also
    ones that are prefixes of each other (``s`` and ``s2``). Registering a class of the
    same name again (a notebook cell run twice) replaces it.
    """
    if not (isinstance(cls, type) and issubclass(cls, Reduction)):
        raise bad_value("register_reduction(cls)", cls, "a subclass of packlab.kernels.Reduction",
                        "Decorate a class such as `class MyReduction(Reduction): ...`.")
    name = getattr(cls, "name", None)
    if not (isinstance(name, str) and name.isidentifier()):
        raise bad_value(f"{cls.__name__}.name", name, "an identifier such as 'sumabs'",
                        "Set the class attribute name = '...': it is what reduce= takes.")
    old = REDUCTIONS[name] if name in REDUCTIONS else None
    same = old is not None and (old.__module__, old.__qualname__) == (cls.__module__, cls.__qualname__)
    if old is not None and not same and old.__module__.startswith("packlab.kernels."):
        raise bad_value(f"{cls.__name__}.name", name,
                        f"a name not built into packlab (it is {old.__qualname__}'s)",
                        "Give the reduction a name of its own.")
    for attr in ("fields", "params"):
        names = getattr(cls, attr, None)
        if attr == "fields" and names is None:
            raise bad_value(f"{cls.__name__}.fields", None, "a tuple of state field names, e.g. ('s', 's2')",
                            "Set the class attribute fields = (...).")
        ok = isinstance(names, tuple) and all(isinstance(n, str) and n.isidentifier() for n in names)
        if not ok or len(set(names)) < len(names) or (attr == "fields" and not names):
            raise bad_value(f"{cls.__name__}.{attr}", names,
                            "a tuple of distinct identifiers, e.g. ('s', 's2')",
                            f"Set the class attribute {attr} = (...).")
    REDUCTIONS.register(name, cls)
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
            given = ", ".join(f"{k}={v!r}" for k, v in options.items())
            raise PacklabError(
                f"{given} is not an option of reduce={self.name!r}."
                f" Remove it (options by reduction: ddof for var/std, bins/range for histogram,"
                " combine/identity for reduce='custom').", field=next(iter(options)),
                value=next(iter(options.values())))
        self.vtype = np.dtype(vtype)
        self.skipna = checks.boolean(skipna, "skipna", fix=SKIPNA_FIX) and self.vtype.kind == "f"

    # -- description --------------------------------------------------------
    def key(self) -> tuple:
        """What the generated loop depends on (the compile-cache key).

        Parameters passed to the loop as arguments (histogram edges, a combine's
        identity) are not part of it: one compiled loop serves every value of them.
        """
        return (self.name, self.vtype.str, self.skipna, str(self.state_dtype()))

    def __dask_tokenize__(self) -> tuple:
        """Everything that changes the answer: the class and every attribute (dtypes,
        ``skipna``, ``ddof``, histogram edges, a combine's kernel and identity), so two
        graphs share a layer name only when they compute the same thing."""
        from dask.base import normalize_token

        cls = type(self)
        return (cls.__module__, cls.__qualname__, normalize_token(sorted(vars(self).items())))

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
        """The same update, straight into the state (when no inner loop is reduced):
        :func:`.codegen.locals_to_state` rewrites every ``l_<field>`` on the syntax tree."""
        return locals_to_state(self.update_local(), self.state_dtype().names)

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


def _squeezed(shape: tuple[int, ...], axis: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axis else n for i, n in enumerate(shape))


def make_reduction(reduce: Any, vtype: np.dtype, skipna: bool, options: dict[str, Any]) -> Reduction:
    """Resolve ``reduce=``: a registered name (``"custom"`` with ``combine=`` and
    ``identity=`` among them), or a combine function ``f(a, b)`` with ``identity=``.

    Examples
    --------
    >>> make_reduction("sum", np.dtype("float32"), False, {}).result_dtype()
    dtype('float32')
    >>> make_reduction(lambda a, b: max(a, b), np.dtype("int64"), False, {"identity": 0}).name
    'custom'
    """
    from . import combine, extrema, histogram, moments  # noqa: F401  (they register themselves)

    if isinstance(reduce, str):
        return REDUCTIONS.get(reduce, "reduce")(vtype, skipna, **options)
    if callable(reduce):
        if "combine" in options:
            raise PacklabError(
                f"reduce={reduce!r} is a combine function and combine={options['combine']!r} was "
                "given too: pass reduce=f, identity=... or reduce='custom', combine=f, identity=...",
                field="combine", value=options["combine"])
        return combine.Custom(vtype, skipna, combine=reduce, **options)
    raise PacklabError(
        f"reduce={reduce!r} is invalid: expected a reduction name such as 'sum', or a "
        "combine function f(a, b) with identity=.", field="reduce", value=reduce)
