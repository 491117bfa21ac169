"""packlab: right-sized Dask clusters, queues, pipelines and kernels for pack compute.

The public names are imported on first use (PEP 562), so ``import packlab`` and the
command line stay quick: distributed, dask.array, numba and xarray load only when a
cluster, a kernel or a queue is asked for.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from . import hooks
from .errors import ConfigError, PacklabError, PacklabRuntimeError, PacklabWarning
from .plugins import entry_point_names


def _check_backend(value: object, field: str) -> None:
    """A registered backend: an installed one is known from its entry point (no import of
    Dask); anything else is checked by the backends' registry, which imports them."""
    if isinstance(value, str) and value in entry_point_names("packlab.backends"):
        return
    from .clusters.base import check_backend

    check_backend(value, field)


try:
    from . import config  # merges packlab.yaml into dask.config

    # The setting types that packages above the foundation own (config.py names none).
    config.register_kind("backend", _check_backend)
    config.register_kind("currency", "packlab.telemetry.pricing:check_currency")
    # Telemetry takes part in launch() and in a queue's opening through hooks (imported
    # when first run), so neither the clusters nor the queue import it.
    hooks.CLUSTER_HOOKS.register("telemetry", "packlab.telemetry.collect:CLUSTER_HOOK")
    hooks.QUEUE_HOOKS.register("telemetry", "packlab.telemetry.collect:QUEUE_HOOK")
    from .profiles import PROFILES, Profile
except ConfigError:
    # A dask config file that is not even YAML: dask cannot be imported. `import packlab`
    # still works, so that the command line reports it in one line; every use raises it.
    pass

try:
    __version__ = version("packlab")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

_LAZY = {
    "PROFILES": ".profiles",  # imported above unless the dask config is unreadable
    "Profile": ".profiles",
    "PackCluster": ".clusters",
    "kernel": ".kernels",
    "mapreduce": ".kernels",
    "launch": ".clusters.launch",
    "connect": ".clusters.connect",
    "Job": ".queue",
    "JobQueue": ".queue",
    "Retry": ".queue",
    "Pipeline": ".pipeline",
    "Pricing": ".telemetry.pricing",
    "Finding": ".telemetry.advisor",
    "Monitor": ".telemetry.monitor",
    "monitor": ".telemetry.monitor",
    "advise": ".telemetry.summary",
}

if TYPE_CHECKING:
    from .clusters import PackCluster
    from .clusters.connect import connect
    from .clusters.launch import launch
    from .kernels import kernel, mapreduce
    from .pipeline import Pipeline
    from .queue import Job, JobQueue, Retry
    from .telemetry.advisor import Finding
    from .telemetry.monitor import Monitor, monitor
    from .telemetry.pricing import Pricing
    from .telemetry.summary import advise


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'packlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "PROFILES",
    "Finding",
    "Job",
    "JobQueue",
    "Monitor",
    "PackCluster",
    "PacklabError",
    "PacklabRuntimeError",
    "PacklabWarning",
    "Pipeline",
    "Pricing",
    "Profile",
    "Retry",
    "__version__",
    "advise",
    "connect",
    "kernel",
    "launch",
    "mapreduce",
    "monitor",
]
