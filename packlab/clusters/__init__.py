"""Where capacity comes from: cluster backends behind one interface."""

from . import local, slurm  # noqa: F401  (register the built-in backends)
from .base import BACKENDS, Backend, ClusterRequest, PackCluster, PacklabWarning, register_backend

__all__ = ["BACKENDS", "Backend", "ClusterRequest", "PackCluster", "PacklabWarning", "register_backend"]
