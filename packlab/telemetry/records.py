"""Plain records from what the collectors and the store hand over: a dataclass instance,
or a dict of its fields (a SQLite row, a JSON object)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TypeVar

from ..errors import bad_value

T = TypeVar("T")


def record(value: object, cls: type[T], name: str) -> T:
    """``value`` as a ``cls``: itself, or ``cls(**value)`` for a dict of its fields.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class P:
    ...     x: int
    >>> record({"x": 1}, P, "p")
    P(x=1)
    >>> record({"y": 1}, P, "p")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    packlab.errors.PacklabError: p={'y': 1} is invalid: expected a P with fields ['x']. Remove 'y'.
    """
    if isinstance(value, cls):
        return value
    names = sorted(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    expected = f"a {cls.__name__} with fields {names}"
    if not isinstance(value, Mapping):
        raise bad_value(name, value, f"a {cls.__name__} or a dict of its fields")
    unknown = sorted(set(map(str, value)) - set(names))
    if unknown:
        raise bad_value(name, dict(value), expected, f"Remove {unknown[0]!r}.")
    try:
        return cls(**value)
    except TypeError as e:  # a required field is missing
        missing = str(e).split(": ", 1)[-1] if "missing" in str(e) else str(e)
        raise bad_value(name, dict(value), expected, f"Add the missing fields: {missing}.") from None


def records(values: object, cls: type[T], name: str) -> list[T]:
    """A list of ``cls`` records from an iterable of records or dicts (named ``name[i]``)."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise bad_value(name, values, f"a list of {cls.__name__} records (or dicts of their fields)")
    return [record(v, cls, f"{name}[{i}]") for i, v in enumerate(values)]


__all__ = ["record", "records"]
