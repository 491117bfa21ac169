"""Registries of plug-ins: cluster backends, queue policies, reductions, checkpoint formats,
alert sinks, advisor rules. One lookup and one "unknown X" error for all of them.

A plug-in is registered in code (``REGISTRY.register(name, obj)``, or a class decorator
built on it) or, for a package installed beside packlab, through an entry point in the
registry's group, as xarray finds its backends::

    # the plug-in's pyproject.toml
    [project.entry-points."packlab.backends"]
    pbs = "mypackage.pbs:PBSBackend"

Entry points are read once, on the first lookup or listing that needs them, and a name
registered in code wins over an entry point of the same name (so a copied checkout whose
package metadata is not installed still finds the built-in plug-ins, which register in
code). A value registered as a ``"module:attribute"`` string is imported when first used,
so registering costs no import.

Examples
--------
>>> colours = Registry("colour", "packlab.colours")
>>> colours.register("red", "#f00")
>>> colours.get("red", "colour")
'#f00'
>>> colours.get("rd", "colour")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
packlab.errors.PacklabError: colour='rd' is unknown: choose one of 'red'. Did you mean 'red'?
"""

from __future__ import annotations

import difflib
import importlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from .errors import PacklabError

log = logging.getLogger("packlab.plugins")

T = TypeVar("T")
#: How to fix an unknown name: words, or a function giving them when the error is raised.
Fix = str | Callable[[], str] | None


def load(ref: str) -> Any:
    """The object named by ``"module:attribute"`` (``attribute`` may be dotted).

    Examples
    --------
    >>> load("os.path:join")("a", "b")
    'a/b'
    """
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def entry_point_names(group: str) -> set[str]:
    """The names of the entry points of ``group`` (nothing is imported).

    Examples
    --------
    >>> "local" in entry_point_names("packlab.backends")  # with packlab installed
    True
    """
    try:
        return {ep.name for ep in entry_points(group=group)}
    except Exception:  # broken metadata of some other package
        return set()


def unknown(kind: str, value: object, field: str, names: list[str], fix: str | None = None, *,
            invalid: bool = False) -> PacklabError:
    """The one "unknown X" error: what was given, every choice, a "did you mean" for a near
    miss, and how to fix it.

    Examples
    --------
    >>> str(unknown("policy", "FIFO", "policy", ["fifo", "lifo"], "Or pass a Policy."))
    "policy='FIFO' is unknown: choose one of 'fifo', 'lifo'. Did you mean 'fifo'? Or pass a Policy."
    >>> str(unknown("policy", 3, "policy", ["fifo", "lifo"]))
    "policy=3 is invalid: expected the name of a policy: choose one of 'fifo', 'lifo'."
    """
    options = sorted(names)
    choices = ", ".join(map(repr, options)) or "(none registered)"
    if isinstance(value, str) and not invalid:
        msg = f"{field}={value!r} is unknown: choose one of {choices}."
    elif isinstance(value, str):  # the wording of settings checked as a choice (backend=)
        msg = f"{field}={value!r} is invalid: expected one of {choices}."
    else:
        msg = f"{field}={value!r} is invalid: expected the name of a {kind}: choose one of {choices}."
    if isinstance(value, str) and value.strip():
        same_case = [c for c in options if c.lower() == value.strip().lower()]
        close = same_case or difflib.get_close_matches(value, options, n=1)
        if close:
            msg += f" Did you mean {close[0]!r}?"
    if fix:
        msg += f" {fix}"
    return PacklabError(msg, field=field, value=value)


class Registry(Mapping[str, T], Generic[T]):
    """Named plug-ins of one ``kind``, registered in code or found through the entry-point
    ``group``. ``invalid`` words an unknown name as "is invalid: expected one of" (for a
    setting that has always been checked as a choice) rather than "is unknown: choose one
    of". A read-only mapping of name to plug-in (``"module:attr"`` references are
    loaded on access); :meth:`register` adds one, :meth:`get` looks one up with the one
    error for an unknown name.
    """

    def __init__(self, kind: str, group: str | None = None, *, fix: str | Fix = None,
                 invalid: bool = False) -> None:
        self.kind, self.group, self.fix, self.invalid = kind, group, fix, invalid
        self._items: dict[str, Any] = {}
        self._from_entry_points: set[str] = set()
        self._scanned = group is None
        self._lock = threading.RLock()

    # -- registering ---------------------------------------------------------------------
    def register(self, name: str, obj: T | str) -> None:
        """Register ``obj`` (or a ``"module:attr"`` reference to it) as ``name``; a later
        registration in code replaces an earlier one."""
        if not isinstance(name, str) or not name:
            raise PacklabError(f"a {self.kind} needs a non-empty name, got {name!r}.", field="name",
                               value=name)
        with self._lock:
            self._items[name] = obj
            self._from_entry_points.discard(name)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (nothing if it is not registered)."""
        with self._lock:
            self._items.pop(name, None)

    def _scan(self) -> None:
        if self._scanned:
            return
        with self._lock:
            if self._scanned:
                return
            self._scanned = True
            try:
                found = entry_points(group=self.group)
            except Exception:  # broken metadata of some other package: keep what is in code
                log.warning("packlab: could not read the entry points of %s", self.group, exc_info=True)
                return
            for ep in found:
                if ep.name not in self._items:
                    self._items[ep.name] = ep.value
                    self._from_entry_points.add(ep.name)

    # -- looking up ------------------------------------------------------------------------
    def _resolve(self, name: str) -> T:
        with self._lock:
            obj = self._items[name]
            if isinstance(obj, str) and ":" in obj:
                try:
                    obj = load(obj)
                except Exception as e:
                    ep = name in self._from_entry_points
                    where = f"the entry point {self.group}:{name}" if ep else name
                    ref = self._items[name]
                    raise PacklabError(f"the {self.kind} {name!r} cannot be loaded from {ref!r} "
                                       f"({type(e).__name__}: {e}); {where} names a module or object that "
                                       "does not import. Fix or uninstall the package that provides it.",
                                       field=self.kind, value=name) from e
                self._items[name] = obj
            return obj

    def _fix(self, fix: str | Fix) -> str | None:
        fix = fix if fix is not None else self.fix
        return fix() if callable(fix) else fix

    def get(self, value: object, field: str | None = None, fix: str | Fix = None) -> T:
        """The plug-in registered as ``value``; else the one "unknown X" error, naming
        ``field`` (default: the kind), every choice and ``fix``."""
        if isinstance(value, str) and value in self:
            return self._resolve(value)
        raise unknown(self.kind, value, field or self.kind, list(self), self._fix(fix), invalid=self.invalid)

    def check(self, value: object, field: str | None = None, fix: str | Fix = None) -> str:
        """``value`` if it names a registered plug-in (nothing is loaded), else the error."""
        if isinstance(value, str) and value in self:
            return value
        raise unknown(self.kind, value, field or self.kind, list(self), self._fix(fix), invalid=self.invalid)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self)

    def __getitem__(self, name: str) -> T:
        self._scan()
        return self._resolve(name)

    def __contains__(self, name: object) -> bool:
        self._scan()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._scan()
        return iter(list(self._items))

    def __len__(self) -> int:
        self._scan()
        return len(self._items)

    def __repr__(self) -> str:
        return f"<Registry of {self.kind}s: {', '.join(self.names())}>"


__all__ = ["Registry", "entry_point_names", "load", "unknown"]
