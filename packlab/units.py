"""Parsing of the human units users type: memory sizes, durations, SLURM walltimes.

Built on ``dask.utils.parse_bytes``/``parse_timedelta``; these wrappers only turn
their terse exceptions into messages that name the field and the fix.
"""

from __future__ import annotations

import math
import numbers
import re

from dask.utils import format_bytes, parse_bytes, parse_timedelta

from .errors import bad_value

_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?$")


def memory_bytes(value: str | int | float, field: str = "memory") -> int:
    """Parse a memory size such as ``"4GiB"``, ``"500MB"`` or ``2**30`` into bytes.

    Examples
    --------
    >>> memory_bytes("2GiB")
    2147483648
    """
    expected = 'a size such as "4GiB" or "500MB"'
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
        raise bad_value(field, value, expected)
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise bad_value(field, value, expected + " (a whole number of bytes)")
    try:
        n = parse_bytes(value) if isinstance(value, str) else int(value)
    except (ValueError, TypeError, OverflowError):
        raise bad_value(field, value, expected) from None
    if n <= 0:
        raise bad_value(field, value, "a positive size", 'Use e.g. "2GiB".')
    return n


def seconds(value: str | int | float, field: str = "duration", allow_zero: bool = True) -> float:
    """Parse a duration such as ``"60s"``, ``"5 minutes"`` or ``30`` into seconds.

    Examples
    --------
    >>> seconds("2m")
    120.0
    """
    expected = 'a duration such as "60s" or "5m"'
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
        raise bad_value(field, value, expected)
    positive = "a positive duration" if not allow_zero else "a duration of 0 or more"
    # Dask cannot parse a negative duration at all; say what is wrong with it.
    if str(value).strip().startswith("-"):
        raise bad_value(field, value, positive)
    try:
        s = float(parse_timedelta(value, default="seconds"))
    except (ValueError, TypeError, KeyError, OverflowError):
        raise bad_value(field, value, expected) from None
    if not math.isfinite(s):
        raise bad_value(field, value, expected + " (finite)")
    if s < 0 or (s == 0 and not allow_zero):
        raise bad_value(field, value, positive)
    return s


def walltime_seconds(value: str | int | float, field: str = "walltime") -> int:
    """Parse a SLURM walltime (``"HH:MM:SS"``, ``"D-HH:MM:SS"``, ``"MM:SS"``) or a duration.

    Examples
    --------
    >>> walltime_seconds("01:30:00")
    5400
    >>> walltime_seconds("1-00:00:00")
    86400
    """
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
            return total
        if ":" in value:
            raise bad_value(field, value, 'a walltime such as "01:00:00", "1-00:00:00" or "90m"')
    try:
        return int(seconds(value, field=field, allow_zero=False))
    except ValueError:
        raise bad_value(field, value, 'a walltime such as "01:00:00", "1-00:00:00" or "90m"') from None


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


__all__ = ["format_bytes", "format_walltime", "memory_bytes", "seconds", "walltime_seconds"]
