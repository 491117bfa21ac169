"""The driver process of the load benchmark's pipeline: a fan-out of UNITS elements on its
own local cluster. The benchmark SIGKILLs it (and its workers) mid fan-out, then runs it
again to resume.

    python -m benchmarks.load_driver CHECKPOINT LOG UNITS   # prints the outcome as JSON

Each unit appends ``unit-<i>`` to LOG (one line per execution: how often it ran) and makes
its side effect idempotently: ``effects/<i>`` written under a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import warnings

import packlab

WORK = 0.002  # seconds of work per unit


def effect(root: str, i: int, value: int) -> None:
    d = os.path.join(root, "effects")
    tmp = os.path.join(d, f".{i}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(str(value))
    os.replace(tmp, os.path.join(d, str(i)))


def build(checkpoint: str, log: str, units: int) -> packlab.Pipeline:
    pipe = packlab.Pipeline("load", checkpoint=checkpoint)

    @pipe.stage
    def source(units=units):
        return list(range(units))

    @pipe.stage(map_over="source")
    def unit(source, log=log):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < WORK:
            pass
        with open(log, "a") as f:
            f.write(f"unit-{source}\n")
        effect(os.path.dirname(log), source, source * source)
        return source * source

    @pipe.stage
    def total(unit):
        return sum(unit)

    return pipe


def main(checkpoint: str, log: str, units: str) -> None:
    warnings.simplefilter("ignore", packlab.PacklabWarning)
    os.makedirs(os.path.join(os.path.dirname(log), "effects"), exist_ok=True)
    with packlab.launch(workers=2, cores=1, memory="1GiB", wait=True) as pc:
        print("started", flush=True)
        t0 = time.time()
        run = build(checkpoint, log, int(units)).run(pc, resume=True)
        took = time.time() - t0
    s = run["unit"]
    # the first queue activity after the stage started: before it, the intact checkpoints
    # were verified (and the queue opened)
    con = sqlite3.connect(f"file:{os.path.join(checkpoint, 'queue.db')}?mode=ro", uri=True)
    first = con.execute("SELECT MIN(t) FROM events WHERE t >= ?", (s.started,)).fetchone()[0]
    con.close()
    print(json.dumps({"ok": run.ok, "total": run["total"].result if run.ok else None, "seconds": took,
                      "run_started": t0, "unit_started": s.started, "first_submitted": first,
                      "units": s.units, "units_cached": s.units_cached, "jobs": len(s.jobs),
                      "invalid": len(s.invalid), "cached": run.cached, "computed": run.computed}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
