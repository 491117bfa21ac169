"""Workload profiles: what one worker of each kind of job needs.

A profile maps a workload type to per-worker cores, memory, GPUs and a default
walltime. The five built-in profiles come from ``packlab.yaml``; users add or
override them under ``packlab.profiles`` in any dask config file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import config
from .errors import ConfigError, PacklabError, whole_number
from .units import format_bytes, format_walltime, memory_bytes, walltime_seconds

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

    Examples
    --------
    >>> parse_profile("mine", {"cores": 2, "memory": "1GiB"}).memory
    1073741824
    """
    where = f"packlab.profiles.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a mapping of cores/memory/gpus/walltime, got {spec!r}.")
    unknown = set(spec) - _FIELDS
    if unknown:
        raise ConfigError(
            f"{where} has unknown field(s) {sorted(unknown)}; allowed fields are {sorted(_FIELDS)}."
        )
    if "cores" not in spec or "memory" not in spec:
        raise ConfigError(f"{where} must set both 'cores' and 'memory' (e.g. cores: 2, memory: 4GiB).")
    try:
        return Profile(
            name=name,
            cores=whole_number(spec["cores"], f"{where}.cores", minimum=1),
            memory=memory_bytes(spec["memory"], f"{where}.memory"),
            gpus=whole_number(spec.get("gpus", 0), f"{where}.gpus"),
            walltime=walltime_seconds(spec.get("walltime", "01:00:00"), f"{where}.walltime"),
            description=str(spec.get("description", "")),
        )
    except PacklabError as e:
        raise ConfigError(f"In your dask config: {e}") from None


class _Profiles(Mapping[str, Profile]):
    """Read-only view of the profiles in dask.config, re-read on every access.

    Re-reading keeps ``dask.config.set({"packlab.profiles.x": ...})`` effective
    immediately, as users of dask.config expect.
    """

    def _raw(self) -> Mapping[str, Any]:
        raw = config.get("profiles", {}) or {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"packlab.profiles must be a mapping of profile names, got {raw!r}.")
        return raw

    def __getitem__(self, name: str) -> Profile:
        raw = self._raw()
        if name not in raw:
            raise PacklabError(
                f"profile={name!r} is unknown: choose one of {sorted(raw)}, "
                "or define it under packlab.profiles in your dask config."
            )
        # Only the profile asked for is validated: one broken entry in a user's config
        # must not make every other profile unusable.
        return parse_profile(name, raw[name])

    def __contains__(self, name: object) -> bool:
        # Mapping's default catches only KeyError; an unknown name is a PacklabError here.
        return name in self._raw()

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw())

    def __len__(self) -> int:
        return len(self._raw())

    def __repr__(self) -> str:
        return "PROFILES(" + ", ".join(self._raw()) + ")"


PROFILES: Mapping[str, Profile] = _Profiles()
