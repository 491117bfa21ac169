"""Map-reduce kernels: ``@kernel`` scalar functions run fused on every chunk, CPU or GPU."""

from . import combine, extrema, histogram, moments  # noqa: F401  (they register their reduce= names)
from .kernel import Kernel, kernel
from .mapreduce import mapreduce
from .reductions import REDUCTIONS, Reduction, register_reduction

__all__ = ["REDUCTIONS", "Kernel", "Reduction", "kernel", "mapreduce", "register_reduction"]
