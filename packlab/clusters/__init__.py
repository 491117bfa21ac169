"""Where capacity comes from: cluster backends behind one interface."""

from ..errors import PacklabSecurityWarning, PacklabWarning  # the public names of this package too
from . import local, slurm  # noqa: F401  (register the built-in backends)
from .base import (
    BACKENDS,
    Backend,
    ClusterClosed,
    ClusterRequest,
    ClusterStartError,
    PackCluster,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "ClusterClosed",
    "ClusterRequest",
    "ClusterStartError",
    "PackCluster",
    "PacklabSecurityWarning",
    "PacklabWarning",
    "register_backend",
]
