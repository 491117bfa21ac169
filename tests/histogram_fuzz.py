"""Histogram inputs built to break bin arithmetic, run against np.histogram.

Run as a script by tests/kernels/test_kernels.py with NUMBA_BOUNDSCHECK=1, so that any bin
index outside the state array raises IndexError instead of writing past it.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

import packlab
from packlab.errors import PacklabError


@packlab.kernel
def ident(x):
    return x


def cases(n: int):
    rng = np.random.default_rng(7)
    tiny = np.finfo("f8").tiny
    fixed = [(0.0, 1e-320), (0.0, 5e-324), (1.0, 1.0 + 2.3e-16), (1e8, 1e8 + 1.5e-8), (-1e300, 1e300),
             (-1.7e308, 1.7e308), (0.0, tiny), (-tiny, tiny), (1e-310, 3e-310), (3.4e38, 3.4e38 * 1.0000001)]
    for lo, hi in fixed:
        for bins in (1, 2, 3, 64):
            for dtype in ("f4", "f8"):
                yield lo, hi, bins, dtype
    for _ in range(n):
        dtype = rng.choice(["f4", "f8", "i8"])
        lo = float(rng.choice([0.0, rng.normal() * 10.0 ** rng.integers(-300, 300)]))
        width = float(abs(lo) * 10.0 ** rng.integers(-17, -5)) or float(10.0 ** rng.integers(-320, 300))
        yield lo, lo + width, int(rng.choice([1, 2, 7, 64, 1000])), dtype  # few loops to compile


def values(lo: float, hi: float, bins: int, dtype: str) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = np.linspace(lo, hi, bins + 1).astype(dtype if dtype != "i8" else "f8")
        x = np.concatenate([e, np.nextafter(e, np.inf), np.nextafter(e, -np.inf), (e[:-1] + e[1:]) / 2,
                            [np.nan, np.inf, -np.inf, 0.0, 1e308, -1e308]])
        if dtype == "i8":
            return np.clip(np.nan_to_num(x), -2**62, 2**62).astype("i8")
        return x.astype(dtype)


def main(n: int) -> int:
    checked = refused = numpy_crashes = 0
    for lo, hi, bins, dtype in cases(n):
        x = values(lo, hi, bins, dtype)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                want = np.histogram(x, bins=bins, range=(lo, hi))[0]
            except ValueError:  # NumPy cannot make the edges: packlab must refuse too
                want = None
            except IndexError:  # NumPy's own bin index overflows (a range of subnormal width)
                want, numpy_crashes = "crash", numpy_crashes + 1
        try:
            got = packlab.mapreduce(ident, x, reduce="histogram", bins=bins, range=(lo, hi)).compute(
                scheduler="sync")
        except PacklabError:
            with np.errstate(all="ignore"):
                edges = np.linspace(lo, hi, bins + 1, dtype=np.result_type(lo, hi, x.dtype, 1.0))
            if want is not None and np.all(np.isfinite(edges)):  # NumPy's edges infinite: refused
                print(f"refused where NumPy bins: {lo!r}, {hi!r}, {bins}, {dtype}")
                return 1
            refused += 1
            continue
        if isinstance(want, str):  # no reference: the counts of what lies in the range
            edges = np.histogram_bin_edges(np.zeros(0, x.dtype), bins=bins, range=(lo, hi))
            xb = x.astype(edges.dtype)
            want = got if got.sum() == np.sum((xb >= edges[0]) & (xb <= edges[-1])) else None
        if want is None or not np.array_equal(got, want):
            print(f"differs from NumPy: {lo!r}, {hi!r}, {bins}, {dtype}: {got} != {want}")
            return 1
        checked += 1
    print(f"checked {checked} (NumPy itself crashed on {numpy_crashes}), refused as NumPy {refused}")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
