"""The keywords :func:`packlab.launch` passes on to a backend's Dask cluster class.

One place checks them, names first, then values, before anything starts: Dask would
otherwise only log the error from a worker that never comes up (``lifetime="soon"``),
raise from deep inside (``silence_logs="lots"``, ``worker_class="nope"``), split a string
into characters (``preload="os"``), or let a nested setting undo one of packlab's own
(``scheduler_kwargs={"dashboard_address": "0.0.0.0:0"}``).

Each backend declares, in :attr:`Backend.keyword_kinds`, the kind of each keyword whose
value packlab can check; :data:`KINDS` says what each kind accepts. A dashboard address
nested in the scheduler's options is taken out and becomes the cluster's dashboard
address, checked (and warned about) the same way as ``launch(dashboard_address=)``;
directory keywords go through :func:`packlab.files.private_directory` when the backend
uses them.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from dask.utils import parse_bytes, parse_timedelta
from distributed.utils import import_term

from .. import checks
from ..errors import PacklabError, bad_value

#: The keys of a scheduler-options mapping that hold the dashboard's address.
NESTED_DASHBOARD = "dashboard_address"


def _strings(value: object, field: str) -> list[str]:
    # A single string is one item: "--qos=high" is not ['-', '-', 'q', ...].
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise bad_value(field, value, "a list of strings",
                        f'e.g. {field}=["--qos=high"] (one string is taken as one item).')
    return list(value)


def _duration(value: object, field: str) -> object:
    try:
        parse_timedelta(value)
    except Exception:
        raise bad_value(field, value, 'a duration such as "1h", "30 minutes" or a number of seconds',
                        'e.g. lifetime="1h".') from None
    return value


def _bytes(value: object, field: str) -> object:
    try:
        if isinstance(value, bool) or parse_bytes(value) < 0:
            raise ValueError
    except Exception:
        raise bad_value(field, value, 'a size such as "4GiB"', 'e.g. "4GiB".') from None
    return value


def _log_level(value: object, field: str) -> object:
    names = [n for n in logging.getLevelNamesMapping() if n != "NOTSET"]
    if value is False or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    if isinstance(value, str) and value.upper() in names:
        return value.upper()
    close = difflib.get_close_matches(str(value).upper(), names, n=1)
    raise bad_value(field, value, "a logging level (a number, or a name such as 'WARNING'), or False",
                    f"Did you mean {close[0]!r}?" if close else "e.g. silence_logs='ERROR'.")


def _class(value: object, field: str) -> object:
    if isinstance(value, type):
        return value
    if isinstance(value, str):
        try:
            return import_term(value) and value
        except Exception as e:
            raise bad_value(field, value, "a class, or the import path of one",
                            f"'{value}' cannot be imported ({type(e).__name__}); "
                            'e.g. "distributed.Nanny".') from None
    raise bad_value(field, value, "a class, or the import path of one", 'e.g. "distributed.Nanny".')


def _mapping(value: object, field: str) -> dict:
    if not isinstance(value, Mapping):
        raise bad_value(field, value, "a dict", f"e.g. {field}={{}}.")
    return dict(value)


def _dashboard(value: object, field: str) -> object:
    from .security import parse_dashboard_address

    if value is not None:
        parse_dashboard_address(value, field)
    return value


KINDS: dict[str, Callable[[object, str], Any]] = {
    "strings": _strings,
    "duration": _duration,
    "bytes": _bytes,
    "log-level": _log_level,
    "class": _class,
    "mapping": _mapping,
    "scheduler-options": _mapping,  # and its dashboard address is taken out (see below)
    "dashboard": _dashboard,
    "boolean": checks.boolean,
    "path": checks.path,
    "directory": checks.path,
}


def check_backend_kwargs(impl: Any, extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, object]]:
    """Check the keywords for ``impl``'s Dask cluster class, names then values.

    Returns the keywords in canonical form (a string for a list-valued keyword becomes a
    list of one) and the dashboard addresses they ask for, by field, taken out of
    scheduler options, for :func:`packlab.launch` to check with its own (and to warn about).
    Nothing is started and nothing is warned.
    """
    _check_names(impl, extra)
    out = dict(extra)
    dashboards: dict[str, object] = {}
    for key, kind in impl.keyword_kinds.items():
        if key not in out:
            continue
        out[key] = KINDS[kind](out[key], key)
        if kind == "scheduler-options" and NESTED_DASHBOARD in out[key]:
            dashboards[f"{key}[{NESTED_DASHBOARD!r}]"] = out[key].pop(NESTED_DASHBOARD)
        elif kind == "dashboard" and out[key] is not None:
            dashboards[key] = out[key]
    return out, dashboards


def _check_names(impl: Any, extra: dict[str, Any]) -> None:
    """Refuse a keyword packlab sets itself (naming the argument to use) or one the
    backend's Dask cluster class does not take."""
    for key in extra:
        if key in impl.reserved:
            raise PacklabError(
                f"{key}={extra[key]!r} is set by packlab itself for backend={impl.name!r}: "
                f"remove it; {impl.reserved[key]}.",
                field=key, value=extra[key],
            )
    accepted = impl.cluster_keywords()
    if accepted is None:
        return
    unknown = sorted(set(extra) - accepted)
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(accepted), n=1)
        hint = ""
        if close and close[0] in impl.reserved:
            hint = f" Did you mean {close[0]!r}? packlab sets that one: {impl.reserved[close[0]]}."
        elif close:
            hint = f" Did you mean {close[0]!r}?"
        raise PacklabError(
            f"{key}={extra[key]!r} is not a keyword of launch() nor of backend {impl.name!r}'s "
            f"Dask cluster class: remove it, or use one of launch()'s arguments.{hint}",
            field=key, value=extra[key],
        )
