"""packlab: right-sized Dask clusters, queues, pipelines and kernels for pack compute."""

from importlib.metadata import PackageNotFoundError, version

from . import config  # noqa: F401  (merges packlab.yaml into dask.config)
from .clusters import PackCluster, PacklabWarning
from .errors import PacklabError
from .kernels import kernel, mapreduce
from .launch import launch
from .profiles import PROFILES, Profile
from .queue import Job, JobQueue, Retry

try:
    __version__ = version("packlab")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "PROFILES",
    "Job",
    "JobQueue",
    "PackCluster",
    "PacklabError",
    "PacklabWarning",
    "Profile",
    "Retry",
    "__version__",
    "kernel",
    "launch",
    "mapreduce",
]
