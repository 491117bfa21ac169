"""Parsing of the human units users type: memory sizes, durations, SLURM walltimes; and
the one way packlab writes an amount of money (:func:`format_money`).

The unit names are Dask's (``dask.utils.byte_sizes``/``timedelta_sizes``), so a value
that works in a Dask setting works here, but the grammar is packlab's own and strict:
a number is required (``"GB"`` alone is not 1 GB, ``""`` is not 1 byte), digits are
ASCII, compound durations such as ``"1h30m"`` are understood, and every result is
finite and bounded (:data:`MAX_SECONDS`, :data:`MAX_BYTES`), so it can be handed to
``threading.Event.wait`` or SQLite without an ``OverflowError``.
"""

from __future__ import annotations

import math
import numbers
import re

from dask.utils import byte_sizes, format_bytes, timedelta_sizes

from .checks import real
from .errors import bad_value

MAX_SECONDS = 100 * 366 * 86400
"""The longest duration accepted (about 100 years; below ``threading.TIMEOUT_MAX``)."""

MAX_BYTES = 2**63 - 1
"""The largest memory size accepted (8 EiB: what a signed 64-bit integer holds)."""

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_SIZE = re.compile(rf"^\s*({_NUMBER})\s*([a-zA-Z]*)\s*$", re.ASCII)
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]*)\s*", re.ASCII)
_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?$", re.ASCII)


def memory_bytes(value: str | int | float, field: str = "memory") -> int:
    """Parse a memory size such as ``"4GiB"``, ``"500MB"`` or ``2**30`` into bytes.

    The result is a whole number of bytes from 1 to :data:`MAX_BYTES`.

    Examples
    --------
    >>> memory_bytes("2GiB")
    2147483648
    >>> memory_bytes("GB")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: memory='GB' is invalid: expected a size such as "4GiB" or "500MB"...
    """
    expected = 'a size such as "4GiB" or "500MB"'
    if isinstance(value, str):
        m = _SIZE.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in byte_sizes:
            raise bad_value(field, value, expected, f"Units: {', '.join(_BYTE_UNITS)}.")
        multiplier = byte_sizes[unit]
        x = float(m.group(1)) * multiplier
        if multiplier == 1 and x != int(x):
            raise bad_value(field, value, expected + " (a whole number of bytes)")
    else:
        x = real(value)  # type: ignore[assignment]
        if x is None:
            raise bad_value(field, value, expected)
        if math.isfinite(x) and x != int(x):
            raise bad_value(field, value, expected + " (a whole number of bytes)")
    if not math.isfinite(x) or x > MAX_BYTES:
        raise bad_value(field, value, f"a size of at most {format_bytes(MAX_BYTES)}")
    if x < 1:
        raise bad_value(field, value, "a positive size", 'Use e.g. "2GiB".')
    return int(value) if isinstance(value, numbers.Integral) else int(x)


_BYTE_UNITS = ["B", "kB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"]


def seconds(value: str | int | float, field: str = "duration", allow_zero: bool = True) -> float:
    """Parse a duration such as ``"60s"``, ``"5 minutes"``, ``"1h30m"`` or ``30`` into seconds.

    A bare number is seconds. The result is finite, from 0 (above 0 unless
    ``allow_zero``) to :data:`MAX_SECONDS`.

    Examples
    --------
    >>> seconds("2m")
    120.0
    >>> seconds("1h30m")
    5400.0
    """
    expected = 'a duration such as "60s", "5m" or "1h30m"'
    positive = "a positive duration" if not allow_zero else "a duration of 0 or more"
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):  # say what is wrong with it, not just "not a duration"
            raise bad_value(field, value, positive)
        s = _parse_duration(text)
        if s is None:
            raise bad_value(field, value, expected)
    else:
        s = real(value)  # type: ignore[assignment]
        if s is None:
            raise bad_value(field, value, expected)
        if math.isnan(s):
            raise bad_value(field, value, expected + " (finite)")
    if s < 0 or (s == 0 and not allow_zero):
        raise bad_value(field, value, positive)
    if s > MAX_SECONDS:
        raise bad_value(field, value, f"a duration of at most {MAX_SECONDS} s (about 100 years)",
                        "For no limit, pass None where the argument allows it.")
    return s


def _parse_duration(text: str) -> float | None:
    """Seconds from ``"90"``, ``"1.5h"``, ``"1h 30m"``; ``None`` if ``text`` is not that."""
    if not text:
        return None
    total, pos, parts = 0.0, 0, 0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None or m.end() == pos:
            return None
        number, unit = m.groups()
        if not unit:
            if parts or m.end() != len(text):  # a bare number only on its own: "90" is 90 s
                return None
            unit = "s"
        if unit not in timedelta_sizes:
            return None
        total += float(number) * timedelta_sizes[unit]
        pos, parts = m.end(), parts + 1
    return total


def walltime_seconds(value: str | int | float, field: str = "walltime") -> int:
    """Parse a SLURM walltime (``"HH:MM:SS"``, ``"D-HH:MM:SS"``, ``"MM:SS"``) or a duration.

    The result is whole seconds, at least 1 (a fraction of a second is dropped).

    Examples
    --------
    >>> walltime_seconds("01:30:00")
    5400
    >>> walltime_seconds("1-00:00:00")
    86400
    """
    expected = 'a walltime such as "01:00:00", "1-00:00:00" or "90m"'
    if isinstance(value, str):
        m = _WALLTIME.match(value.strip())
        if m:
            days, a, b, c = m.groups()
            if c is None:  # MM:SS
                h, mi, s = 0, int(a), int(b)
            else:
                h, mi, s = int(a), int(b), int(c)
            if mi >= 60 or s >= 60:
                raise bad_value(field, value, 'a walltime "HH:MM:SS" with minutes and seconds below 60')
            total = int(days or 0) * 86400 + h * 3600 + mi * 60 + s
            if total <= 0:
                raise bad_value(field, value, "a positive walltime")
            if total > MAX_SECONDS:
                raise bad_value(field, value, f"a walltime of at most {format_walltime(MAX_SECONDS)}")
            return total
        if ":" in value:
            raise bad_value(field, value, expected)
    try:
        total = int(seconds(value, field=field, allow_zero=False))
    except ValueError:
        raise bad_value(field, value, expected) from None
    if total < 1:
        raise bad_value(field, value, "a walltime of at least 1 second", 'Use e.g. "01:00:00" or "90m".')
    return total


def format_walltime(total: int) -> str:
    """Format seconds as SLURM's ``HH:MM:SS`` (hours may exceed 24).

    Examples
    --------
    >>> format_walltime(5400)
    '01:30:00'
    """
    h, rem = divmod(int(total), 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


CURRENCY_SIGNS = {"USD": "$", "EUR": "\u20ac", "GBP": "\u00a3"}
"""The signs :func:`format_money` writes before an amount (``sign=True``); a currency not
here is written as its code after the amount."""


def format_money(amount: float | None, currency: str, *, cents: bool = False, sign: bool = False) -> str:
    """An amount of money in ``currency`` (an ISO 4217 code: the ``packlab.pricing``
    currency) as text: the one money format of the panel, the report, the monitor and the
    launcher.

    Four decimals under 1, two from 1 up, two significant digits for an amount under a
    thousandth; ``"n/a"`` for ``None``. ``cents``: always two decimals (a running total).
    ``sign``: the currency's sign before the amount (:data:`CURRENCY_SIGNS`), else its
    code after it.

    Examples
    --------
    >>> format_money(0.0123, "USD"), format_money(6.3e-7, "EUR"), format_money(1234.5, "GBP")
    ('0.0123 USD', '6.3e-07 EUR', '1,234.50 GBP')
    >>> format_money(0.125, "USD", cents=True), format_money(0.125, "USD", cents=True, sign=True)
    ('0.12 USD', '$0.12')
    >>> format_money(2, "CHF", cents=True, sign=True), format_money(None, "USD")
    ('2.00 CHF', 'n/a')
    """
    if amount is None:
        return "n/a"
    if cents:
        number = f"{amount:,.2f}"
    elif amount and abs(amount) < 0.001:
        number = f"{amount:.2g}"
    else:
        number = f"{amount:,.4f}" if abs(amount) < 1 else f"{amount:,.2f}"
    mark = CURRENCY_SIGNS.get(currency) if sign else None
    return f"{mark}{number}" if mark else f"{number} {currency}"


__all__ = [
    "CURRENCY_SIGNS",
    "MAX_BYTES",
    "MAX_SECONDS",
    "format_bytes",
    "format_money",
    "format_walltime",
    "memory_bytes",
    "seconds",
    "walltime_seconds",
]
