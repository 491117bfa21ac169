"""Exceptions that packlab raises for bad input and unmet requirements.

Every message names the field that was wrong, what was given, and how to fix it.
"""

from __future__ import annotations


class PacklabError(ValueError):
    """Bad input or an unmet requirement, with a message that says how to fix it.

    ``field`` and ``value`` name what was wrong when one argument or setting was (the
    command line uses ``field`` to name the option as it was typed).
    """

    def __init__(self, message: str = "", *, field: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class PacklabWarning(UserWarning):
    """packlab changed what you asked for (e.g. clamped to the machine) and says so."""


class PacklabSecurityWarning(UserWarning):
    """A setting opens a cluster to other users or hosts; packlab does as told and says so.
    Not a :class:`PacklabWarning`: silencing packlab's notes must not silence this."""


class PacklabRuntimeError(RuntimeError):
    """A runtime state stops packlab from doing what was asked; the input was fine.

    Not a ``ValueError``: ``except ValueError`` around a job's own result must not also
    catch "the queue is closed".
    """


class QueueClosed(PacklabRuntimeError):
    """The job queue is closed (or stopped because it lost its driver lease)."""


class QueueFailed(PacklabRuntimeError):
    """The queue's own loop failed (e.g. a custom policy raised): it dispatches nothing more."""


class LeaseError(PacklabRuntimeError):
    """The store's driver lease is held by another live driver, or this driver lost it."""


class StoreError(PacklabRuntimeError):
    """The queue's store failed (a write refused, the disk full or read-only).

    ``kind`` says what failed when it is known (:mod:`packlab.store.failures`): ``"full"``,
    ``"read-only"``, ``"io-error"``, ``"corrupt"``, ``"locked"`` or ``"other"``.
    """

    def __init__(self, message: str = "", *, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


class ConfigError(PacklabError):
    """A value in the packlab dask-config section (``packlab.yaml``) is invalid."""


class BackendUnavailable(PacklabRuntimeError):
    """The requested cluster backend cannot run here now (``sbatch`` missing, ``slurmctld``
    down): a state of this machine, not bad input, so not a ``ValueError`` (exit code 1)."""


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
    return PacklabError(msg, field=field, value=value)
