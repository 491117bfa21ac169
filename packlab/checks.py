"""One argument-checking layer for every public entry point.

Each check takes the value, the name of the field as the user knows it (``"workers"``,
``"packlab.queue.retry.attempts"``) and returns the value in its canonical form, or raises
a :class:`~packlab.errors.PacklabError` that names the field, the value given, what was
expected and how to fix it. The configuration schema (``packlab-schema.yaml``), the
command line and the Python API all go through these functions, so a class of bad input
(a bool where a number is expected, ``nan``, ``"no"`` for a boolean, a list for a name)
is refused the same way everywhere.

Examples
--------
>>> integer(4, "workers", minimum=0)
4
>>> boolean("no", "spot")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
packlab.errors.PacklabError: spot='no' is invalid: expected True or False (a bool, not a string). A string...
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .errors import PacklabError, bad_value

# packlab.units (the unit parsers) builds on real() below, so the checks that wrap its
# parsers (duration, memory, walltime) import it when called.

T = TypeVar("T")


def _is_bool(value: object) -> bool:
    # numpy's bool is named bool_ before NumPy 2 and bool since
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in
                                       ("bool_", "bool"))


def real(value: object) -> float | None:
    """``value`` as a float when it is one real number, else ``None``: the one test of
    "a real number, not a bool" that every check and parser uses.

    Python and NumPy integers and floats are real numbers; bools (Python's and NumPy's),
    strings, arrays and ``None`` are not. Infinities and NaN are returned as they are (the
    caller decides whether they are allowed); an int too large for a float is ``inf``.

    Examples
    --------
    >>> import math, numpy as np
    >>> real(3), real(np.float32(0.5)), real(-math.inf)
    (3.0, 0.5, -inf)
    >>> real(True) is None, real("1") is None, real(np.array([1.0])) is None
    (True, True, True)
    >>> real(10**400)
    inf
    """
    if _is_bool(value) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:  # an int too large for a float
        return math.inf if value > 0 else -math.inf


def integer(value: object, field: str, *, minimum: int | None = None, maximum: int | None = None,
            fix: str | None = None) -> int:
    """A whole number (``int`` or an integral NumPy integer; never a bool, float or string).

    Examples
    --------
    >>> integer(0, "cores", minimum=1)
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: cores=0 is invalid: expected a whole number of at least 1.
    """
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise bad_value(field, value, _int_range(minimum, maximum), _join(_int_fix(value), fix))
    n = int(value)
    if (minimum is not None and n < minimum) or (maximum is not None and n > maximum):
        raise bad_value(field, value, _int_range(minimum, maximum), fix)
    return n


def _join(*fixes: str | None) -> str | None:
    """The fixes given, in order (the specific one first), or ``None``."""
    return " ".join(f for f in fixes if f) or None


def _int_range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"a whole number from {minimum} to {maximum}"
    if minimum is not None:
        return "a whole number, 0 or more" if minimum == 0 else f"a whole number of at least {minimum}"
    if maximum is not None:
        return f"a whole number of at most {maximum}"
    return "a whole number"


def _int_fix(value: object) -> str | None:
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return f"Pass the number itself ({value.strip()}), not a string."
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return f"Pass {int(value)} (an int), not a float."
    return None


def number(value: object, field: str, *, minimum: float | None = None, maximum: float | None = None,
           above: float | None = None, fix: str | None = None) -> float:
    """A finite real number (int or float, not a bool); ``above`` is an exclusive minimum.

    Examples
    --------
    >>> number(float("nan"), "ratio")
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: ratio=nan is invalid: expected a finite number.
    """
    parts = []
    if above is not None:
        parts.append(f"above {above:g}")
    if minimum is not None:
        parts.append(f"at least {minimum:g}")
    if maximum is not None:
        parts.append(f"at most {maximum:g}")
    expected = "a finite number" + (" " + " and ".join(parts) if parts else "")
    x = real(value)
    if x is None:
        raise bad_value(field, value, expected, _join(_number_fix(value), fix))
    if (not math.isfinite(x) or (above is not None and x <= above)
            or (minimum is not None and x < minimum) or (maximum is not None and x > maximum)):
        raise bad_value(field, value, expected, fix)
    return x


def _number_fix(value: object) -> str | None:
    if isinstance(value, str):
        try:
            x = float(value)
        except ValueError:
            return None
        if math.isfinite(x):
            return f"Pass the number itself ({value.strip()}), not a string."
    return None


def fraction(value: object, field: str, *, fix: str = "For 10% write 0.1.") -> float:
    """A fraction from 0 up to, not including, 1 (a share of memory, a discount).

    Examples
    --------
    >>> fraction(0.25, "reserve-memory")
    0.25
    >>> fraction(10, "spot_discount")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: spot_discount=10 is invalid: expected a fraction ... For 10% write 0.1.
    """
    x = number(value, field, minimum=0, fix=fix)
    if x >= 1:
        raise bad_value(field, value, "a fraction from 0 up to (not including) 1", fix)
    return x


_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "0", "1"}


def boolean(value: object, field: str, *, fix: str | None = None) -> bool:
    """``True`` or ``False`` (NumPy's too) only: ``"no"``, ``"false"``, ``0`` and ``1`` are
    refused, not truthy. ``fix`` is added to the message.

    Examples
    --------
    >>> import numpy as np
    >>> boolean(False, "jitter"), boolean(np.True_, "skipna")
    (False, True)
    >>> boolean(1, "skipna", fix="Pass True or False.")
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: skipna=1 is invalid: expected True or False. Pass True or False.
    """
    if _is_bool(value):
        return bool(value)
    hint = None
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        hint = ("A string is always truthy: use a bool (True/False in Python, true/false in YAML, "
                "True/False in a DASK_* environment variable).")
    raise bad_value(field, value, "True or False (a bool, not a string)" if isinstance(value, str)
                    else "True or False", _join(hint, fix))


def text(value: object, field: str, *, expected: str = "a non-empty string", fix: str | None = None) -> str:
    """A non-empty ``str`` (a list, a number, ``""`` or a NUL character is refused).

    Examples
    --------
    >>> text(["ann"], "owner")
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: owner=['ann'] is invalid: expected a non-empty string.
    """
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise bad_value(field, value, expected, fix)
    return value


def choice(value: object, field: str, choices: Iterable[str], *, fix: str | None = None) -> str:
    """One of ``choices`` (strings), with a "did you mean" for a near miss.

    Examples
    --------
    >>> choice("fifo", "policy", ["fifo", "priority"])
    'fifo'
    >>> choice("priorty", "policy", ["fifo", "priority"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: policy='priorty' is invalid: ... Did you mean 'priority'?
    """
    options = sorted(choices)
    if isinstance(value, str) and value in options:
        return value
    expected = "one of " + ", ".join(repr(c) for c in options)
    hint = fix
    if hint is None and isinstance(value, str):
        same_case = [c for c in options if c.lower() == value.strip().lower()]
        close = same_case or difflib.get_close_matches(value, options, n=1)
        if close:
            hint = f"Did you mean {close[0]!r}?"
    raise bad_value(field, value, expected, hint)


def path(value: object, field: str) -> str:
    """A file system path (``str`` or ``os.PathLike``), expanded (``~``); never empty.

    Examples
    --------
    >>> path(3, "store")
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: store=3 is invalid: expected a file path (a str or pathlib.Path).
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise bad_value(field, value, "a file path (a str or pathlib.Path)")
    return os.path.expanduser(value)


def duration(value: object, field: str, *, allow_zero: bool = True) -> float:
    """Seconds from ``"5m"``, ``"1h30m"`` or a number (finite, never negative).

    Examples
    --------
    >>> duration("90s", "timeout")
    90.0
    """
    from .units import seconds

    return seconds(value, field, allow_zero=allow_zero)  # type: ignore[arg-type]


def memory(value: object, field: str) -> int:
    """Bytes from ``"4GiB"``, ``"500MB"`` or a positive whole number.

    Examples
    --------
    >>> memory("1KiB", "memory")
    1024
    """
    from .units import memory_bytes

    return memory_bytes(value, field)  # type: ignore[arg-type]


def walltime(value: object, field: str) -> int:
    """Seconds from a SLURM walltime (``"01:00:00"``, ``"1-00:00:00"``) or a duration."""
    from .units import walltime_seconds

    return walltime_seconds(value, field)  # type: ignore[arg-type]


def optional(check: Callable[..., T], value: object, field: str, **kwargs: Any) -> T | None:
    """``None`` stays ``None``; anything else goes through ``check``.

    Examples
    --------
    >>> optional(integer, None, "workers") is None
    True
    """
    return None if value is None else check(value, field, **kwargs)


def mapping_of(value: object, field: str, check_value: Callable[[object, str], T]) -> dict[str, T]:
    """A dict with string keys whose values each pass ``check_value`` (named ``field[key]``)."""
    if not isinstance(value, dict):
        raise bad_value(field, value, "a dict")
    out = {}
    for k, v in value.items():
        text(k, f"{field} key")
        out[k] = check_value(v, f"{field}[{k!r}]")
    return out


__all__ = [
    "PacklabError",
    "bad_value",
    "boolean",
    "choice",
    "duration",
    "fraction",
    "integer",
    "mapping_of",
    "memory",
    "number",
    "optional",
    "path",
    "real",
    "text",
    "walltime",
]
