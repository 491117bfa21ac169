"""Cache keys: what a stage's output depends on, as a short hex digest.

A stage's key hashes its code, its constant parameters and the keys of the stages it
waits for, never their data: a stage downstream of a gigabyte array is keyed by that
array's stage key, so keying costs microseconds whatever the data size. Changed code or
a changed upstream key gives a new key (the stage and everything after it run again);
unchanged ones give the same key (the checkpoint is reused).

The code's token is its bytecode (``co_code``), constants, names, the values its
closure captured, the values of the module-level constants it reads (numbers, strings,
short tuples of them) and, one module deep, the code of the module-level functions it
calls: editing a helper the stage calls, or a ``THRESHOLD = 3`` it reads, invalidates it;
editing a comment does not. Other globals (modules, classes, arrays) are not followed. Constant
values are tokenized with :func:`dask.base.tokenize`, which keys a dask collection by its
graph name (cheap) instead of its values.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Callable
from typing import Any

#: Bumped when the key recipe changes: every old checkpoint is then recomputed, not misread.
KEY_VERSION = "packlab-pipeline-1"
_SCALARS = (int, float, complex, str, bytes, bool, type(None))


def _is_constant(value: object) -> bool:
    """A module-level value whose repr is cheap and says all: a scalar or a short tuple of them."""
    if isinstance(value, tuple):
        return len(value) <= 64 and all(isinstance(v, _SCALARS) for v in value)
    return isinstance(value, _SCALARS)


def _code_parts(code: types.CodeType, out: list, fn_globals: dict, seen: set[int], depth: int) -> None:
    out += [code.co_code, code.co_names, code.co_varnames]
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _code_parts(c, out, fn_globals, seen, depth)
        elif isinstance(c, frozenset):  # its repr's order follows the hash seed
            out.append(sorted(map(repr, c)))
        else:
            out.append(repr(c))
    for name in code.co_names:  # module-level constants it reads (THRESHOLD = 3): their values
        g = fn_globals.get(name)
        if _is_constant(g):
            out.append((name, repr(g)))
        elif depth > 0 and isinstance(g, types.FunctionType) and id(g) not in seen:
            # module-level functions it calls by name, one level (and their own constants)
            seen.add(id(g))
            out.append(name)
            _code_parts(g.__code__, out, g.__globals__, seen, depth - 1)


def code_token(fn: Callable) -> str:
    """A digest of what the function does (see the module docs).

    Examples
    --------
    >>> def f(x=1): return x + 1
    >>> def g(x=1): return x + 2
    >>> code_token(f) == code_token(f), code_token(f) == code_token(g)
    (True, False)
    """
    from dask.base import tokenize

    inner = getattr(fn, "__wrapped__", fn)
    code = getattr(inner, "__code__", None)
    if code is None:  # a callable object: its class's __call__ and its state
        call = type(fn).__dict__.get("__call__")
        code = getattr(call, "__code__", None)
        parts: list = [type(fn).__qualname__, tokenize(getattr(fn, "__dict__", None))]
        if code is not None:
            _code_parts(code, parts, getattr(call, "__globals__", {}), set(), 1)
        return _digest(parts)
    # Not the module's name: the same code run as __main__ and imported is the same stage.
    parts = [inner.__qualname__]
    _code_parts(code, parts, getattr(inner, "__globals__", {}), {id(inner)}, 1)
    cells = getattr(inner, "__closure__", None) or ()
    for cell in cells:
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        parts.append(code_token(value) if isinstance(value, types.FunctionType) else tokenize(value))
    return _digest(parts)


def _digest(parts: list) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p if isinstance(p, bytes) else repr(p).encode()
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def stage_key(name: str, code: str, params: dict[str, Any], upstream: dict[str, str],
              map_over: str | None = None) -> str:
    """The cache key of one stage: its name, code token, constants and upstream keys.

    Examples
    --------
    >>> k = stage_key("clean", "c0de", {"limit": 3}, {"load": "a1"})
    >>> len(k), k == stage_key("clean", "c0de", {"limit": 3}, {"load": "a1"})
    (32, True)
    >>> k == stage_key("clean", "c0de", {"limit": 3}, {"load": "b2"})
    False
    """
    from dask.base import tokenize

    consts = tokenize(sorted(params.items())) if params else ""
    parts = [KEY_VERSION, sys.version_info[:2], name, code, consts, sorted(upstream.items()), map_over]
    return _digest(parts)[:32]


def unit_key(key: str, index: int) -> str:
    """The key of element ``index`` of a fan-out stage: the stage's key and the position
    (the elements themselves are determined by the upstream key already).

    Examples
    --------
    >>> unit_key("ab12", 3)
    'ab12-3'
    """
    return f"{key}-{index}"
