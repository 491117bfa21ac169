"""Run the benchmarks and print one side-by-side table.

    python -m benchmarks                 # every suite
    python -m benchmarks clusters        # only benchmarks/bench_clusters.py
    python -m benchmarks --quick         # smaller sizes, for a smoke run

Each ``benchmarks/bench_<suite>.py`` defines ``run(quick: bool) -> list[Row]``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import benchmarks

from .table import render


def main(argv: list[str] | None = None) -> int:
    suites = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name.startswith("bench_")
    )
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("suite", nargs="*", help=f"suites to run, of {suites} (default: all)")
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = ap.parse_args(argv)
    unknown = set(args.suite) - set(suites)
    if unknown:
        ap.error(f"unknown suite(s) {sorted(unknown)}: choose from {suites}")
    rows = []
    for name in args.suite or suites:
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += mod.run(quick=args.quick)
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
