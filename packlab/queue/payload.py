"""What travels to a worker: the function and its arguments, cloudpickled once.

The same bytes are stored (so a restarted driver can resubmit) and sent to Dask, so a
job is serialized exactly once. On the worker, :func:`run` times the call itself: the
run time fair share charges, without the wait in Dask's queues before it.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import cloudpickle

from ..errors import LeaseError, PacklabError


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


_local = threading.local()


def _holder(path: str) -> str | None:
    """The driver id holding the lease of the store at ``path``, read on this worker
    (one read-only connection per thread and store); ``""`` when the store cannot be
    seen from here (a worker on another host without the shared filesystem)."""
    cons = getattr(_local, "cons", None)
    if cons is None:
        cons = _local.cons = {}
    try:
        st = os.stat(path)
    except OSError:
        return ""
    ident = (st.st_dev, st.st_ino)  # a store removed and made again is another file
    con, was = cons.get(path, (None, None))
    if con is None or was != ident:
        from ..store import connect  # on the worker: the one way to connect, read-only

        if con is not None:
            con.close()
        if len(cons) >= 16:  # a long-lived worker of many queues keeps a few stores open
            for old, _ in cons.values():
                old.close()
            cons.clear()
        con = connect(path, mode="ro")
        cons[path] = (con, ident)
    # fetchall, not fetchone: a statement left unfinished would keep its read snapshot open,
    # and every later read would see the lease as it was then.
    rows = con.execute("SELECT driver FROM lease").fetchall()
    return rows[0][0] if rows else None  # None: released, so no driver runs it


def run_fenced(payload: bytes, fence: tuple[str, str] | None = None) -> tuple[Any, float]:
    """:func:`run`, after checking the fencing token ``(store path, driver id)``: a
    driver that lost its lease (another driver took the store over) may have handed the
    attempt to Dask an instant before it could know; then it must not run, since the
    job is the new driver's now. Raises :class:`packlab.errors.LeaseError` instead.

    Examples
    --------
    >>> run_fenced(cloudpickle.dumps((abs, (-2,), {})))[0]
    2
    """
    if fence is not None:
        path, driver = fence
        holder = _holder(path)
        if holder != "" and holder != driver:
            raise LeaseError(f"store {path}: another driver holds the lease now; this attempt, handed to "
                             "Dask by the driver that lost it, did not run (the new driver runs the job).")
    return run(payload)
