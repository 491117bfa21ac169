"""Where capacity comes from: cluster backends behind one interface."""

from . import local, slurm  # noqa: F401  (register the built-in backends)
from .base import (
    BACKENDS,
    Backend,
    ClusterClosed,
    ClusterRequest,
    ClusterStartError,
    PackCluster,
    PacklabWarning,
    register_backend,
)
from .security import PacklabSecurityWarning

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
