"""Workload profiles: what one worker of each kind of job needs.

A profile maps a workload type to per-worker cores, memory, GPUs and a default
walltime. The five built-in profiles come from ``packlab.yaml``; users add or
override them under ``packlab.profiles`` in any dask config file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import checks, config
from .errors import PacklabError
from .resources import MIN_WORKER_MEMORY
from .units import format_bytes, format_walltime

_FIELDS = {"description", "cores", "memory", "gpus", "walltime"}


@dataclass(frozen=True)
class Profile:
    """Per-worker resources for one workload type.

    Examples
    --------
    >>> p = Profile("tiny", cores=1, memory=2**30, gpus=0, walltime=600)
    >>> p.summary()
    'tiny: 1 cores, 1.00 GiB, 0 GPUs, walltime 00:10:00'
    """

    name: str
    cores: int
    memory: int  # bytes
    gpus: int = 0
    walltime: int = 3600  # seconds
    description: str = ""

    def with_overrides(self, **changes: Any) -> Profile:
        """A copy with some fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def summary(self) -> str:
        """One human line: cores, memory, GPUs and walltime."""
        return (
            f"{self.name}: {self.cores} cores, {format_bytes(self.memory)}, "
            f"{self.gpus} GPUs, walltime {format_walltime(self.walltime)}"
        )


def parse_profile(name: str, spec: Mapping[str, Any]) -> Profile:
    """Validate one profile entry from the config and turn it into a :class:`Profile`.

    Every field goes through :mod:`packlab.checks`; an error is a
    :class:`~packlab.errors.ConfigError` naming the setting (``packlab.profiles.NAME.FIELD``),
    the value and where it came from (file, ``DASK_*`` variable or code).

    Examples
    --------
    >>> parse_profile("mine", {"cores": 2, "memory": "1GiB"}).memory
    1073741824
    >>> parse_profile("mine", {"cores": 2, "memory": "1GiB", "gpu": 1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.ConfigError: packlab.profiles.mine has unknown field 'gpu' (...=1). Did you mean 'gpus'?...
    """
    try:
        return _parse(name, spec)
    except PacklabError as e:
        raise config.with_origin(e) from None


def _parse(name: object, spec: object) -> Profile:
    where = f"packlab.profiles.{name}"
    if not isinstance(name, str) or not name.strip():
        raise PacklabError(
            f"{where} is invalid: a profile name must be a non-empty string, not {name!r}. "
            f"In YAML, quote it: '{name}': {{cores: 2, memory: 4GiB}}.", field=where, value=spec)
    if not isinstance(spec, Mapping):
        raise PacklabError(f"{where} must be a mapping of cores, memory, gpus, walltime, description: "
                           f"{where}={spec!r} is invalid. Write e.g. {{cores: 2, memory: 4GiB}}.",
                           field=where, value=spec)
    for key in spec:
        if key not in _FIELDS:
            close = difflib.get_close_matches(str(key), sorted(_FIELDS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PacklabError(
                f"{where} has unknown field {key!r} ({where}.{key}={spec[key]!r}).{hint} "
                f"Allowed fields: {', '.join(sorted(_FIELDS))}.", field=f"{where}.{key}", value=spec[key])
    missing = [k for k in ("cores", "memory") if k not in spec]
    if missing:
        raise PacklabError(
            f"{where} must set both 'cores' and 'memory': {where}={dict(spec)!r} has no "
            f"{' and no '.join(missing)}. Write e.g. cores: 2, memory: 4GiB.", field=where, value=spec)
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise checks.bad_value(f"{where}.description", description, "a string")
    memory = checks.memory(spec["memory"], f"{where}.memory")
    if memory < MIN_WORKER_MEMORY:
        raise PacklabError(
            f"{where}.memory={spec['memory']!r} is {format_bytes(memory)} per worker, less than the "
            f"{format_bytes(MIN_WORKER_MEMORY)} a Dask worker needs (it would restart in a loop): "
            "give a size with its unit, e.g. memory: 4GiB (a bare number is bytes).",
            field=f"{where}.memory", value=spec["memory"])
    return Profile(
        name=name,  # type: ignore[arg-type]
        cores=checks.integer(spec["cores"], f"{where}.cores", minimum=1),
        memory=memory,
        gpus=checks.integer(spec.get("gpus", 0), f"{where}.gpus", minimum=0),
        walltime=checks.walltime(spec.get("walltime", "01:00:00"), f"{where}.walltime"),
        description=description,
    )


class _Profiles(Mapping[str, Profile]):
    """Read-only view of the profiles in dask.config, re-read on every access.

    Re-reading keeps ``dask.config.set({"packlab.profiles.x": ...})`` effective
    immediately, as users of dask.config expect. Names match as dask keys do, ``_`` and
    ``-`` alike: ``DASK_PACKLAB__PROFILES__GENERAL_BATCH__CORES=1`` makes dask store the
    built-in ``general-batch`` as ``general_batch``, and it stays ``general-batch`` here.
    """

    def _raw(self) -> dict[str, Any]:
        raw = config.get("profiles")  # a mapping: the schema says so
        return {_display(k): v for k, v in raw.items()}

    def __getitem__(self, name: str) -> Profile:
        raw = self._raw()
        key = _match(name, raw)
        if key is _NONE:
            names = sorted(map(str, raw))
            close = difflib.get_close_matches(name, names, n=1) if isinstance(name, str) else []
            hint = f"Did you mean {close[0]!r}? " if close else ""
            raise PacklabError(
                f"profile={name!r} is unknown: {hint}choose one of {names}, "
                "or define it under packlab.profiles in your dask config.", field="profile", value=name)
        # Only the profile asked for is validated: one broken entry in a user's config
        # must not make every other profile unusable.
        return parse_profile(key, raw[key])

    def __contains__(self, name: object) -> bool:
        # Mapping's default catches only KeyError; an unknown name is a PacklabError here.
        return _match(name, self._raw()) is not _NONE

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw())

    def __len__(self) -> int:
        return len(self._raw())

    def __repr__(self) -> str:
        return "PROFILES(" + ", ".join(map(str, self._raw())) + ")"


def _display(key: object) -> Any:
    """A built-in profile's own name even where dask stored it with ``_`` for ``-``."""
    if isinstance(key, str) and key.replace("_", "-") in config.DEFAULTS["packlab"]["profiles"]:
        return key.replace("_", "-")
    return key


_NONE = object()


def _match(name: object, raw: Mapping[Any, Any]) -> Any:
    """The key of ``raw`` that ``name`` means, or ``_NONE``."""
    if not isinstance(name, str):
        try:  # a YAML key such as ``1:`` is there, and parse_profile says what is wrong with it
            return name if name in raw else _NONE
        except TypeError:  # unhashable
            return _NONE
    for candidate in (name, name.replace("_", "-"), name.replace("-", "_")):
        if candidate in raw:
            return candidate
    return _NONE


PROFILES: Mapping[str, Profile] = _Profiles()
