"""What the launcher form means: widget values in, :func:`packlab.launch` arguments out.

Pure functions, so the meaning of the form is testable without widgets or a cluster.
They only reshape values; every check stays in :func:`packlab.launch`, so the widget,
the CLI and Python callers get the same errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..profiles import Profile


def launch_arguments(values: Mapping[str, Any], profile: Profile | None = None) -> dict[str, Any]:
    """Turn the launcher's form values into keyword arguments for :func:`packlab.launch`.

    Parameters
    ----------
    values : mapping
        ``backend``, ``profile``, ``min_workers``, ``max_workers``, ``spot``, ``gpus``,
        ``walltime``, ``partition`` as the widgets hold them (blank text is "not given").
    profile : Profile, optional
        The chosen profile's defaults. A GPU count equal to the profile's is left to the
        profile, so a profile's GPU is dropped with a note on a machine without one,
        while a GPU typed in by hand is an error there.

    Returns
    -------
    dict
        ``workers=n`` when ``min_workers == max_workers`` (a fixed size), otherwise
        ``min_workers``/``max_workers`` (adaptive).

    Examples
    --------
    >>> launch_arguments({"backend": "local", "profile": "analytics", "min_workers": 2,
    ...                   "max_workers": 2, "walltime": " ", "partition": ""})
    {'backend': 'local', 'profile': 'analytics', 'workers': 2}
    >>> launch_arguments({"min_workers": 0, "max_workers": 4, "walltime": "01:00:00"})
    {'min_workers': 0, 'max_workers': 4, 'walltime': '01:00:00'}
    """
    args: dict[str, Any] = {}
    for key in ("backend", "profile"):
        if values.get(key):
            args[key] = values[key]
    lo, hi = values.get("min_workers"), values.get("max_workers")
    if lo is not None and lo == hi:
        args["workers"] = lo
    else:
        args.update({k: v for k, v in (("min_workers", lo), ("max_workers", hi)) if v is not None})
    if values.get("spot"):
        args["spot"] = True
    gpus = values.get("gpus")
    if gpus is not None and (profile is None or gpus != profile.gpus):
        args["gpus"] = gpus
    for key in ("walltime", "partition"):
        text = (values.get(key) or "").strip()
        if text:
            args[key] = text
    return args


def scale_action(min_workers: int, max_workers: int) -> tuple[str, dict[str, int]]:
    """What the Scale button does to a running cluster: a fixed size or adaptive bounds.

    Examples
    --------
    >>> scale_action(3, 3)
    ('scale', {'n': 3})
    >>> scale_action(0, 4)
    ('adapt', {'minimum': 0, 'maximum': 4})
    """
    if min_workers == max_workers:
        return "scale", {"n": min_workers}
    return "adapt", {"minimum": min_workers, "maximum": max_workers}
