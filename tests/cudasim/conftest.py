"""CUDA-simulator tests: numba reads NUMBA_ENABLE_CUDASIM at import, so they run in their
own process (``scripts/test.d/cudasim``). The main pytest run does not collect them."""

from __future__ import annotations

import os
import pathlib
import sys

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore_glob = ["test_*.py"]
else:
    # the NumPy references are shared with the CPU tests (tests/kernels), helpers in tests/
    tests = pathlib.Path(__file__).parent.parent
    sys.path[:0] = [str(tests / "kernels"), str(tests)]
