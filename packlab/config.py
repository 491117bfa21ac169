"""packlab's settings live in dask.config under the ``packlab`` key.

The defaults ship in ``packlab.yaml`` beside this file and are merged at import, the
way dask-jobqueue does it, so users override them in ``~/.config/dask/`` or with
``DASK_PACKLAB__...`` environment variables exactly as they already do for Dask.

The whole ``packlab`` section is checked against ``packlab-schema.yaml`` (beside the
defaults, as distributed ships ``distributed-schema.yaml``) whenever it is read and has
changed: a key the schema does not know, or a value of the wrong kind, raises a
:class:`~packlab.errors.ConfigError` naming the key, the value and where it came from
(a config file, an environment variable, or ``dask.config.set`` in code).
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import yaml

from .errors import ConfigError, PacklabError
from .plugins import Registry, load

try:
    import dask.config
except ValueError as _e:  # dask reads every config file when imported; one is not YAML
    raise ConfigError(" ".join(str(_e).split()) + " Fix that file or move it away.") from None
except TypeError as _e:  # dask fails on a key that is not a string (``1:`` in YAML)
    _dirs = [os.environ.get("DASK_ROOT_CONFIG", "/etc/dask"), os.path.join(sys.prefix, "etc", "dask"),
             os.path.join(os.path.expanduser("~"), ".config", "dask"), os.environ.get("DASK_CONFIG", "")]
    raise ConfigError(
        f"dask could not read its config files ({_e}): one has a key that is not a string, such as "
        f"`1:` in YAML; quote it ('1':). Dask reads the files in {', '.join(d for d in _dirs if d)}."
    ) from None

from . import checks  # after dask.config: a malformed file is reported above

_HERE = os.path.dirname(__file__)
_DEFAULTS_PATH = os.path.join(_HERE, "packlab.yaml")
_SCHEMA_PATH = os.path.join(_HERE, "packlab-schema.yaml")

with open(_DEFAULTS_PATH) as _f:
    DEFAULTS: dict[str, Any] = yaml.safe_load(_f)

_USER = copy.deepcopy(dask.config.config.get("packlab"))  # what files and DASK_* set, if anything
dask.config.update_defaults(DEFAULTS)
if _USER is not None:
    # update_defaults silently replaces a user's non-mapping (``packlab: [1, 2]``,
    # ``profiles: [a]``) by the defaults' mapping; put it back so that it is refused, as it
    # is after dask.config.refresh().
    dask.config.update(dask.config.config, {"packlab": _USER}, priority="new")
del _USER

_SCHEMA: dict[str, Any] | None = None
_VALID: str | None = None  # repr of the last section that passed, so unchanged config is not re-checked
_MISSING = object()

MOVED = {
    "packlab.adaptive.interval": "distributed.adaptive.interval",
    "packlab.adaptive.wait-count": "distributed.adaptive.wait-count",
    "packlab.slurm.partition": "jobqueue.slurm.queue (or launch(partition=...))",
    "packlab.slurm.account": "jobqueue.slurm.account (or launch(account=...))",
    "packlab.slurm.python": "jobqueue.slurm.python",
    "packlab.slurm.interface": "jobqueue.slurm.interface",
    "packlab.slurm.shared-directory": "jobqueue.slurm.shared-temp-directory",
}
"""Settings packlab once had that Dask or dask-jobqueue already own: an old config file
that still sets one is told where the setting lives now."""


class UnknownSetting(ConfigError, KeyError):
    """``config.get`` of a key that packlab does not have (a ``KeyError``, as in dask.config)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def schema() -> dict[str, Any]:
    """The parsed ``packlab-schema.yaml`` (the node of the ``packlab`` section)."""
    global _SCHEMA
    if _SCHEMA is None:
        with open(_SCHEMA_PATH) as f:
            _SCHEMA = yaml.safe_load(f)["packlab"]
    return _SCHEMA


def _duration(value: object, field: str, node: Mapping[str, Any]) -> None:
    s = checks.duration(value, field)
    if "above" in node and s <= node["above"]:
        raise checks.bad_value(field, value, "a positive duration", 'Use e.g. "30s".')


def _mapping(value: object, field: str, node: Mapping[str, Any]) -> None:
    if not isinstance(value, Mapping):
        raise checks.bad_value(field, value, "a mapping")


#: How a value of each ``type:`` of ``packlab-schema.yaml`` is checked: a function
#: ``(value, field, node)`` that raises a PacklabError. Packages above the foundation add the
#: kinds they own (``backend``, ``currency``) with :func:`register_kind`, so this module
#: names none of them.
KINDS: Registry[Callable[..., Any]] = Registry("setting type")
for _name, _check in {
    "string": lambda v, f, n: checks.text(v, f),
    "path": lambda v, f, n: checks.path(v, f),
    "boolean": lambda v, f, n: checks.boolean(v, f),
    "integer": lambda v, f, n: checks.integer(v, f, minimum=n.get("minimum")),
    "number": lambda v, f, n: checks.number(v, f, minimum=n.get("minimum"), above=n.get("above")),
    "fraction": lambda v, f, n: checks.fraction(v, f),
    "duration": _duration,
    "memory": lambda v, f, n: checks.memory(v, f),
    "walltime": lambda v, f, n: checks.walltime(v, f),
    "choice": lambda v, f, n: checks.choice(v, f, n["choices"]),
    "mapping": _mapping,
}.items():
    KINDS.register(_name, _check)


def register_kind(name: str, check: Callable[[object, str], Any] | str) -> None:
    """Let ``packlab-schema.yaml`` use ``type: name``: ``check(value, field)`` raises a
    PacklabError for a bad value (a ``"module:function"`` string is imported when a value
    of that kind is first checked).

    Examples
    --------
    >>> def even(value, field):
    ...     if checks.integer(value, field) % 2:
    ...         raise checks.bad_value(field, value, "an even number")
    >>> register_kind("even", even)
    >>> KINDS["even"](3, "packlab.x", {})
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: packlab.x=3 is invalid: expected an even number.
    """
    if isinstance(check, str):
        KINDS.register(name, lambda v, f, n: load(check)(v, f))
    else:
        KINDS.register(name, lambda v, f, n: check(v, f))


def _check_leaf(node: Mapping[str, Any], value: object, field: str) -> None:
    if value is None and node.get("nullable"):
        return
    kind = node["type"]
    if kind not in KINDS:  # pragma: no cover - a schema typo, or a kind its package did not register
        raise AssertionError(f"packlab-schema.yaml: unknown type {kind!r} at {field}")
    KINDS[kind](value, field, node)


def _walk(node: Mapping[str, Any], value: object, path: list[str]) -> None:
    field = ".".join(["packlab", *path])
    props = node.get("properties")
    if props is None:
        _check_leaf(node, value, field)
        return
    if not isinstance(value, Mapping):
        raise checks.bad_value(field, value, f"a mapping with keys {sorted(props)}")
    for key, sub in value.items():
        canon = str(key).replace("_", "-")
        if canon not in props:
            close = difflib.get_close_matches(canon, list(props), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            moved = MOVED.get(f"{field}.{canon}")
            if moved:
                hint = f" It was removed from packlab: set {moved} instead (Dask's own setting)."
            raise PacklabError(
                f"{field}.{key}={sub!r} is invalid: {key!r} is not a packlab setting.{hint} "
                f"Known keys under {field}: {', '.join(sorted(props))}.", field=f"{field}.{key}", value=sub)
        _walk(props[canon], sub, [*path, canon])


def _origin(field: str, value: object = None) -> str:
    """Where the setting ``packlab.a.b`` (now ``value``) came from: the environment
    variable or the config file that sets it to that value, else code.

    Dask's priority is followed: environment variables over files, a later file over
    an earlier one. A file that sets the key to another value (overridden since) is not
    the origin.
    """
    parts = _canon(field.split("."))
    for name, raw in sorted(os.environ.items()):
        if not name.startswith("DASK_") or name == "DASK_INTERNAL_INHERIT_CONFIG":
            continue
        keys = _canon(name[5:].lower().split("__"))
        if keys == parts[: len(keys)]:  # the variable sets the key or a parent of it
            found = _lookup(dask.config.interpret_value(raw), parts[len(keys):])
            if found is not _MISSING and _same(found, value):
                return f"environment variable {name}"
        elif keys[: len(parts)] == parts:  # it sets part of the key's value (a profile's field)
            found = _lookup(value, keys[len(parts):])
            if found is not _MISSING and _same(found, dask.config.interpret_value(raw)):
                return f"environment variable {name}"
    for fname in reversed(_config_files()):
        try:
            with open(fname) as f:
                data = yaml.safe_load(f)
        except (OSError, ValueError, yaml.YAMLError):
            continue
        found = _lookup(data, parts)
        if found is not _MISSING and _same(found, value):
            return f"file {fname}"
    return "dask.config.set(...) in code, or a config file dask read before it changed"


def _canon(keys: list[str]) -> list[str]:
    return [str(k).replace("_", "-") for k in keys]


def _lookup(node: Any, parts: list[str]) -> Any:
    """``node[a][b]...`` matching keys as dask does (``_`` and ``-`` alike), or ``_MISSING``."""
    for p in parts:
        if not isinstance(node, Mapping):
            return _MISSING
        match = [k for k in node if str(k).replace("_", "-") == p]
        if not match:
            return _MISSING
        node = node[match[-1]]
    return node


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # an exotic value whose == fails: compare what the user sees
        return repr(a) == repr(b)


def with_origin(error: PacklabError) -> ConfigError:
    """``error`` (about a ``packlab.*`` setting) as a :class:`ConfigError` that also says
    where the bad value came from: an environment variable, a file, or code."""
    where = _origin(error.field, error.value) if error.field else "your dask config"
    return ConfigError(f"{error} (set by {where})", field=error.field, value=error.value)


def _config_files() -> list[str]:
    out = []
    for p in dask.config.paths:
        if os.path.isdir(p):
            try:
                names = sorted(os.listdir(p))
            except OSError:
                continue
            out += [os.path.join(p, n) for n in names if n.endswith((".yaml", ".yml", ".json"))]
        elif os.path.isfile(p):
            out.append(p)
    return out


def validate() -> None:
    """Check the whole ``packlab`` section of dask.config against the schema.

    Raises :class:`~packlab.errors.ConfigError` naming the key, the value, what is
    expected and where the value came from. Unchanged settings are not re-checked.

    Examples
    --------
    >>> with dask.config.set({"packlab.queue.retry.attempts": "five"}):
    ...     validate()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.ConfigError: packlab.queue.retry.attempts='five' is invalid: ... (set by dask.config.set...
    """
    global _VALID
    section = dask.config.config.get("packlab", {})
    snapshot = repr(section)
    if snapshot == _VALID:
        return
    try:
        _walk(schema(), section, [])
        _check_default_profile(section)
    except PacklabError as e:
        raise with_origin(e) from None
    _VALID = snapshot


def _check_default_profile(section: Mapping[str, Any]) -> None:
    """``packlab.profile`` must name one of ``packlab.profiles`` (``_`` and ``-`` alike)."""
    name, profiles = section.get("profile"), section.get("profiles")
    if not isinstance(name, str) or not isinstance(profiles, Mapping):
        return
    names = {str(k).replace("_", "-"): k for k in profiles}
    if name.replace("_", "-") not in names:
        close = difflib.get_close_matches(name, sorted(map(str, profiles)), n=1)
        raise checks.bad_value("packlab.profile", name, "one of the profiles: " + ", ".join(sorted(
            map(str, profiles))), f"Did you mean {close[0]!r}?" if close else
            "Or define it under packlab.profiles.")


def get(key: str, default: Any = _MISSING) -> Any:
    """Read ``packlab.<key>`` from dask.config, after checking the section against the schema.

    An unknown key raises :class:`UnknownSetting` (a ``KeyError``), as ``dask.config.get``
    does, unless a ``default`` is given.

    Examples
    --------
    >>> get("backend")
    'local'
    >>> get("queue.polcy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.config.UnknownSetting: packlab.queue.polcy is not a packlab setting...
    """
    validate()
    try:
        return dask.config.get(f"packlab.{key}")
    except (KeyError, TypeError):  # TypeError: a key below a leaf ("backend.x")
        if default is not _MISSING:
            return default
        field = f"packlab.{key}"
        raise UnknownSetting(
            f"{field} is not a packlab setting: see packlab/packlab.yaml for the keys that exist.",
            field=field) from None
