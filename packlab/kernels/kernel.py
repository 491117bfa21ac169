"""``@packlab.kernel``: a plain scalar Python function, compiled lazily with numba.

A kernel is written once, for scalars (``def anomaly(t, clim): return (t - clim) ** 2``).
packlab compiles it with numba for the CPU (``nogil``, so Dask's threads run it in
parallel) and, on demand, for CUDA; each dtype signature is compiled once per process.
Kernels pickle *by identity*: a worker that already holds a kernel reuses it and its
compiled code instead of compiling again for every task graph that mentions it.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle
import numba
import numba.extending
import numpy as np
from numba.core import types
from numba.core.errors import NumbaError
from numba.np.numpy_support import as_dtype, from_dtype

from ..errors import PacklabError

_NUMERIC_KINDS = "biuf"
_REGISTRY: dict[str, Kernel] = {}  # uid -> kernel: unpickling returns the live one
# plain function -> its Kernel, so mapreduce(f, ...) and reduce=f compile f once per
# process instead of on every call. The Kernel holds f, so an entry lasts as long as the
# process, as its compiled code does: make functions once (module level), not in a loop.
_WRAPPED: dict[Callable[..., Any], Kernel] = {}
_LOCK = threading.Lock()


def check_numeric(dtype: np.dtype, field: str) -> np.dtype:
    """Accept bool, integer and real float dtypes numba compiles; anything else is a
    clear error (complex, strings, dates, object, long double).

    Examples
    --------
    >>> check_numeric(np.dtype("float32"), "arrays[0]")
    dtype('float32')
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize > 8:
        raise PacklabError(
            f"{field} has dtype {dtype}, which is invalid: numba has no long double, and "
            "converting silently would drop its extra precision. Convert it first, e.g. "
            "with .astype('float64').", field=field, value=dtype)
    if dtype.kind not in _NUMERIC_KINDS:
        raise PacklabError(
            f"{field} has dtype {dtype}, which is invalid: expected a real numeric dtype "
            "(bool, integer or float). Convert it first, e.g. with .astype('float64').",
            field=field, value=dtype)
    return dtype


def compute_dtype(dtype: np.dtype, field: str) -> np.dtype:
    """The dtype an input is computed in: its own in native byte order; float16, which
    numba does not compile, widened (exactly) to float32.

    Examples
    --------
    >>> compute_dtype(np.dtype(">f8"), "arrays[0]"), compute_dtype(np.dtype("f2"), "arrays[0]")
    (dtype('float64'), dtype('float32'))
    """
    dtype = check_numeric(dtype, field)
    if dtype.kind == "f" and dtype.itemsize == 2:
        return np.dtype("f4")
    return dtype.newbyteorder("=")


def numba_reason(err: BaseException) -> str:
    """numba's reason in one line: the first message, the failing call and source line.

    Examples
    --------
    >>> numba_reason(ValueError("Failed in nopython mode pipeline (step: x)\\nUnknown attribute 'y'"))
    "Unknown attribute 'y'"
    """
    lines = [x.strip() for x in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines()]
    lines = [x for x in lines if x and not x.startswith(("Failed in", "During:"))]
    if not lines:
        return type(err).__name__
    parts = [lines[0].rstrip(":")]
    parts += [x.lstrip("> ") for x in lines[1:] if x.startswith(">>>")][:1]
    for i, x in enumerate(lines[:-1]):
        if x.startswith('File "'):
            code = lines[i + 1]
            parts.append(x.rstrip(":") + ("" if code.startswith("<source") else f": {code}"))
            break
    return "; ".join(parts)


class Kernel:
    """A scalar function compiled with numba for CPU and CUDA; see :func:`kernel`."""

    def __init__(self, func: Callable[..., Any], uid: str | None = None, *, field: str = "kernel"):
        func = python_function(func, field)
        self.py_func = func
        self.name = func.__name__
        self.uid = uid or uuid.uuid4().hex
        self.nargs = _arity(func, field)
        functools.update_wrapper(self, func)
        self._cpu = None
        self._ufuncs: dict[tuple[np.dtype, ...], np.ufunc] = {}
        self._cuda = None
        self._types: dict[tuple[np.dtype, ...], np.dtype] = {}

    # -- compiled forms, made on first use ---------------------------------
    @property
    def cpu(self):
        """The numba CPU dispatcher (``nogil``); compiles per signature when called."""
        if self._cpu is None:
            with _LOCK:
                if self._cpu is None:
                    # error_model="numpy": 1/0 is inf and 0/0 NaN, as NumPy and the ufunc
                    # of __call__ give, not a ZeroDivisionError out of the fused loop
                    self._cpu = numba.njit(nogil=True, fastmath={"contract"}, error_model="numpy")(
                        self.py_func)
        return self._cpu

    @property
    def cuda(self):
        """The numba CUDA device function (imported only when a GPU path asks for it)."""
        if self._cuda is None:
            from numba import cuda

            self._cuda = cuda.jit(device=True)(self.py_func)
        return self._cuda

    def result_dtype(self, dtypes: Sequence[np.dtype]) -> np.dtype:
        """The dtype the kernel returns for inputs of these dtypes (compiles it once).

        Errors from numba become one readable :class:`~packlab.errors.PacklabError`
        naming the kernel, the argument types and numba's reason.
        """
        key = tuple(compute_dtype(np.dtype(d), f"{self.name} argument {i}") for i, d in enumerate(dtypes))
        if key in self._types:
            return self._types[key]
        if len(key) != self.nargs:
            raise PacklabError(
                f"kernel {self.name!r} takes {self.nargs} argument(s) but {len(key)} array(s) "
                "were given as arrays: pass one array (or scalar) per kernel argument.", field="arrays",
                value=len(key))
        sig = tuple(from_dtype(d) for d in key)
        try:
            self.cpu.compile(sig)
            ret = self.cpu.overloads[sig].signature.return_type
        except NumbaError as e:
            names = ", ".join(str(d) for d in key)
            raise PacklabError(
                f"kernel {self.name!r} cannot be compiled by numba for argument types "
                f"({names}): {numba_reason(e)}. Fix the kernel so that it works on scalars "
                "of these types."
            ) from None
        if not isinstance(ret, (types.Boolean, types.Integer, types.Float)):
            raise PacklabError(
                f"kernel {self.name!r} returns {ret} for argument types "
                f"({', '.join(map(str, key))}): expected one real number (bool, int or float) "
                "per element."
            )
        out = np.dtype(as_dtype(ret))
        self._types[key] = out
        return out

    # -- direct use on NumPy arrays ----------------------------------------
    def ufunc(self, dtypes: Sequence[np.dtype]) -> np.ufunc:
        """A real NumPy ufunc of the kernel for exactly these input dtypes (cached)."""
        key = tuple(np.dtype(d) for d in dtypes)
        uf = self._ufuncs.get(key)
        if uf is None:
            ret = self.result_dtype(key)  # readable compile errors first
            sig = from_dtype(ret)(*(from_dtype(d) for d in key))
            uf = self._ufuncs[key] = numba.vectorize([sig], nopython=True)(self.py_func)
        return uf

    def __call__(self, *args: Any) -> Any:
        """Apply elementwise to scalars or NumPy arrays, broadcasting like a ufunc."""
        arrays = [np.asarray(a) for a in args]
        arrays = [a.astype(compute_dtype(a.dtype, f"{self.name} argument {i}"), copy=False)
                  for i, a in enumerate(arrays)]
        return self.ufunc([a.dtype for a in arrays])(*arrays)

    # -- identity across processes -----------------------------------------
    def __reduce__(self):
        # By value: the module attribute of a decorated function is this Kernel, so
        # pickling the function by reference would fail.
        return _restore_kernel, (self.uid, cloudpickle.dumps(self.py_func))

    def __dask_tokenize__(self) -> str:
        return self.uid

    def __repr__(self) -> str:
        return f"<packlab.kernel {self.name}/{self.nargs}>"


def _restore_kernel(uid: str, func: bytes) -> Kernel:
    with _LOCK:
        k = _REGISTRY.get(uid)
        if k is None:
            k = _REGISTRY[uid] = Kernel(cloudpickle.loads(func), uid=uid)
    return k


def python_function(func: Any, field: str = "kernel") -> Callable[..., Any]:
    """The Python function numba compiles for ``func`` (a numba ``@njit`` function gives
    its Python function), or a :class:`~packlab.errors.PacklabError` that says what to pass.

    numba compiles Python functions only (``def`` or ``lambda``); a NumPy ufunc, a
    built-in such as ``math.sin``, a ``functools.partial`` or an object with
    ``__call__`` is refused here, with the lambda that wraps it when it has a name.

    Examples
    --------
    >>> import math
    >>> python_function(math.sin)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: kernel=<built-in function sin> is invalid: ... lambda x: math.sin(x), ...
    """
    if numba.extending.is_jitted(func):
        func = func.py_func
    if inspect.isfunction(func):
        return func
    if not callable(func):
        raise PacklabError(
            f"{field}={func!r} is invalid: expected a plain Python function of scalars. "
            "Decorate one, e.g. @packlab.kernel above def f(x): return x * x.",
            field=field, value=func)
    name = _importable_name(func)
    if isinstance(func, np.ufunc):
        what = "a NumPy ufunc"
    elif inspect.isbuiltin(func):
        what = "a built-in function"
    elif inspect.isclass(func):
        what = "a class"
    elif name is not None and name.startswith("np."):
        what = "a NumPy function"
    else:
        what = f"a {type(func).__name__} object, not a Python function (def or lambda)"
    if name is None:
        fix = ("Decorate a Python function with @packlab.kernel, e.g. @packlab.kernel above "
               "def f(x): return x * x (write fixed arguments into its body).")
    else:
        args = ", ".join(_argument_names(func, 2 if field in ("combine", "reduce") else 1))
        fix = f"Wrap it: lambda {args}: {name}({args}), or decorate a Python function with @packlab.kernel."
    raise PacklabError(f"{field}={func!r} is invalid: {what}, which numba cannot compile as a "
                       f"kernel. {fix}", field=field, value=func)


def _importable_name(func: Any) -> str | None:
    """``np.sin``, ``math.sin``, ``abs``: how code names ``func``, if its module has it."""
    name = getattr(func, "__name__", None)
    module = getattr(func, "__module__", None)
    if not isinstance(name, str):
        return None
    if isinstance(func, np.ufunc) and getattr(np, name, None) is func:
        module = "numpy"  # NumPy 1 ufuncs have no __module__
    if not isinstance(module, str) or getattr(sys.modules.get(module), name, None) is not func:
        return None
    if module == "builtins":
        return name
    return f"np.{name}" if module == "numpy" else f"{module}.{name}"


def _argument_names(func: Any, default: int) -> list[str]:
    """Names for the lambda that wraps ``func``: its required positional arguments."""
    n = func.nin if isinstance(func, np.ufunc) else None
    if n is None:
        try:
            params = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):
            params = []
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                 and p.default is p.empty]
        if names:
            return names
        n = default
    return ["x"] if n == 1 else ["a", "b"] if n == 2 else [f"x{i}" for i in range(n)]


def _arity(func: Callable[..., Any], field: str = "kernel") -> int:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        raise PacklabError(f"{field}={func!r} is invalid: its signature cannot be read. Pass a plain "
                           "Python function (def or lambda).", field=field, value=func) from None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY) for p in params):
        raise PacklabError(
            f"{field} {func.__name__!r} is invalid: expected positional arguments only "
            "(one per input array), no *args, **kwargs or keyword-only arguments. Name each "
            "argument, e.g. def f(t, clim).", field=field, value=func.__name__)
    return len(params)


def kernel(func: Callable[..., Any]) -> Kernel:
    """Make a scalar Python function a packlab kernel, compiled with numba on first use.

    The function takes one scalar per input array and returns one number. It stays
    callable on NumPy arrays (broadcasting like a ufunc) and is what
    :func:`packlab.mapreduce` runs fused on every chunk, on CPU or GPU.

    Parameters
    ----------
    func : function
        A Python function (``def`` or ``lambda``) numba can compile in nopython mode
        (arithmetic, ``math``, branches), or a numba ``@njit`` function. A NumPy ufunc
        or a built-in such as ``math.sin`` is not one: wrap it, ``lambda x: np.sin(x)``.

    Returns
    -------
    Kernel
        Compiles lazily, once per dtype signature and process. Wrapping the same
        function again returns the same Kernel, with the code it already compiled.
        Multiply-adds may be fused (numba ``fastmath={"contract"}``), so results can
        differ from plain Python's in the last bit. Arithmetic follows NumPy, not
        Python: ``1 / 0`` is ``inf``, ``0 / 0`` is NaN and an integer ``x // 0`` is 0
        (numba's ``error_model="numpy"``), never a ``ZeroDivisionError``. Inputs of
        float16, which numba does not compile, are computed in float32.

    Examples
    --------
    >>> import numpy as np, packlab
    >>> @packlab.kernel
    ... def anomaly(t, clim):
    ...     return (t - clim) ** 2
    >>> anomaly(np.array([1.0, 4.0]), 2.0)
    array([1., 4.])
    >>> anomaly.result_dtype([np.float32, np.float32])
    dtype('float32')
    """
    return as_kernel(func)


def as_kernel(func: Any, field: str = "kernel") -> Kernel:
    """:func:`kernel`, with errors naming ``field`` (the argument ``func`` was given as:
    ``"combine"`` for a reduction's combine function)."""
    if isinstance(func, Kernel):
        return func
    try:
        k = _WRAPPED.get(func)
    except TypeError:  # an unhashable callable: wrapped anew every time
        k, cache = None, False
    else:
        cache = True
    if k is not None:
        return k
    with _LOCK:
        k = _WRAPPED.get(func) if cache else None
        if k is None:
            k = Kernel(func, field=field)
            _REGISTRY[k.uid] = k
            if cache:
                _WRAPPED[func] = k
    return k
