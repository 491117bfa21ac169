"""packlab's settings live in dask.config under the ``packlab`` key.

The defaults ship in ``packlab.yaml`` beside this file and are merged at import, the
way dask-jobqueue does it, so users override them in ``~/.config/dask/`` or with
``DASK_PACKLAB__...`` environment variables exactly as they already do for Dask.
"""

from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml

_DEFAULTS_PATH = os.path.join(os.path.dirname(__file__), "packlab.yaml")

with open(_DEFAULTS_PATH) as _f:
    DEFAULTS: dict[str, Any] = yaml.safe_load(_f)

dask.config.update_defaults(DEFAULTS)


def get(key: str, default: Any = None) -> Any:
    """Read ``packlab.<key>`` from dask.config.

    Examples
    --------
    >>> get("backend")
    'local'
    """
    return dask.config.get(f"packlab.{key}", default=default)
