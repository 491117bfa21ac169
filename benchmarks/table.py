"""Side-by-side result tables: every row is a ratio to the baseline of its group."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    """One measurement. ``higher_is_better`` says how to read the ratio."""

    group: str  # what is measured, e.g. "sum(x*x+2x), 3 GB float64"
    name: str  # who did it, e.g. "packlab (threads)"
    value: float
    unit: str  # "GB/s", "s", "jobs/s", ...
    baseline: bool = False
    higher_is_better: bool = True
    note: str = ""


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Shortest wall time of ``repeat`` calls of ``fn`` in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def render(rows: list[Row]) -> str:
    """Format rows grouped, with each value's ratio to its group's baseline.

    The ratio is always "times better than the baseline": value/baseline for
    rates, baseline/value for times.
    """
    out = []
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r.group, []).append(r)
    w = max([len(r.name) for r in rows] + [10])
    for group, rs in groups.items():
        out.append(f"\n{group}")
        base = next((r for r in rs if r.baseline), rs[0])
        for r in rs:
            if base.value and r.value:
                ratio = r.value / base.value if r.higher_is_better else base.value / r.value
                rtxt = f"{ratio:6.2f}x"
            else:
                rtxt = "     -"
            mark = " (baseline)" if r is base else ""
            out.append(f"  {r.name:<{w}}  {r.value:12.3f} {r.unit:<8} {rtxt}{mark}  {r.note}")
    return "\n".join(out)
