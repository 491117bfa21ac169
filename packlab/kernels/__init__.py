"""Map-reduce kernels: ``@kernel`` scalar functions run fused on every chunk, CPU or GPU."""

from . import histogram  # noqa: F401  (registers reduce="histogram")
from .kernel import Kernel, kernel
from .mapreduce import mapreduce
from .reductions import REDUCTIONS, Reduction, register_reduction

__all__ = ["REDUCTIONS", "Kernel", "Reduction", "kernel", "mapreduce", "register_reduction"]
