"""Exceptions that packlab raises for bad input and unmet requirements.

Every message names the field that was wrong, what was given, and how to fix it.
"""

from __future__ import annotations


class PacklabError(ValueError):
    """Bad input or an unmet requirement, with a message that says how to fix it."""


class ConfigError(PacklabError):
    """A value in the packlab dask-config section (``packlab.yaml``) is invalid."""


class BackendUnavailable(PacklabError, RuntimeError):
    """The requested cluster backend cannot run here (e.g. ``sbatch`` is missing)."""


def bad_value(field: str, value: object, expected: str, fix: str | None = None) -> PacklabError:
    """Build a uniform error: ``field=value`` is invalid, what was expected, how to fix it.

    Examples
    --------
    >>> str(bad_value("workers", -1, "a positive integer"))
    'workers=-1 is invalid: expected a positive integer.'
    """
    msg = f"{field}={value!r} is invalid: expected {expected}."
    if fix:
        msg += f" {fix}"
    return PacklabError(msg)


def whole_number(value: object, field: str, minimum: int = 0) -> int:
    """``value`` if it is an int (not a bool) of at least ``minimum``, else a clear error.

    Examples
    --------
    >>> whole_number(3, "workers")
    3
    >>> whole_number(0, "cores", minimum=1)
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: cores=0 is invalid: expected a whole number of at least 1.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = "a whole number, 0 or more" if minimum == 0 else f"a whole number of at least {minimum}"
        raise bad_value(field, value, expected)
    return value
