"""What travels to a worker: the function and its arguments, cloudpickled once.

The same bytes are stored (so a restarted driver can resubmit) and sent to Dask, so a
job is serialized exactly once. On the worker, :func:`run` times the call itself: the
run time fair share charges, without the wait in Dask's queues before it.
"""

from __future__ import annotations

import time
from typing import Any

import cloudpickle

from ..errors import PacklabError


def fn_name(fn: Any) -> str:
    """``module.qualname`` of a callable: the circuit breaker's key and the name shown.

    Examples
    --------
    >>> fn_name(len)
    'builtins.len'
    """
    mod = getattr(fn, "__module__", None) or type(fn).__module__
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__qualname__
    return f"{mod}.{name}"


class Payload(bytes):
    """Pickled call bytes with a short repr: Dask logs a failed task with its arguments.

    Examples
    --------
    >>> Payload(b"abc")
    <packlab job payload, 3 bytes>
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<packlab job payload, {len(self)} bytes>"

    def __reduce__(self):
        return Payload, (bytes(self),)


def dumps(fn: Any, args: tuple, kwargs: dict) -> bytes:
    """Pickle a call, or raise a PacklabError that names what cannot be pickled.

    Examples
    --------
    >>> import threading
    >>> dumps(print, (threading.Lock(),), {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: args[0] (a _thread.lock) cannot be pickled: ...
    """
    try:
        return cloudpickle.dumps((fn, args, kwargs))
    except Exception as e:
        parts = [("the function", fn)] + [(f"args[{i}]", a) for i, a in enumerate(args)]
        parts += [(f"kwargs[{k!r}]", v) for k, v in kwargs.items()]
        for label, obj in parts:
            try:
                cloudpickle.dumps(obj)
            except Exception as inner:
                t = type(obj)
                raise PacklabError(
                    f"{label} (a {t.__module__}.{t.__qualname__}) cannot be pickled: {inner}. Jobs "
                    "travel to workers and into the store; pass data (or a path, or a function "
                    "that opens the resource on the worker) instead."
                ) from None
        raise PacklabError(f"the job cannot be pickled: {e}") from None


def run(payload: bytes) -> tuple[Any, float]:
    """Run a pickled call on a worker (the task packlab gives Dask); return its result
    and how long the call ran, in seconds.

    Examples
    --------
    >>> result, runtime = run(cloudpickle.dumps((divmod, (7, 2), {})))
    >>> result, 0.0 <= runtime < 60.0
    ((3, 1), True)
    """
    fn, args, kwargs = cloudpickle.loads(payload)
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0
