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
