"""A driver process for the pipeline crash test: it runs a pipeline on its own local
cluster; the test kills it (and its workers) with SIGKILL mid-run, then runs it again.

    python tests/pipeline_driver.py CHECKPOINT LOG    # prints the results as JSON at the end
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import warnings

import packlab

ELEMENTS = 8


def effect(log: str, what: str, db: str | None = None) -> None:
    """A raw append (at least once) and, with ``db``, a row inserted idempotently on
    ``what`` (exactly once however often the unit runs; table ``effects(key)``)."""
    with open(log, "a") as f:
        f.write(what + "\n")
    if db is not None:
        con = sqlite3.connect(db, timeout=30)
        with con:
            con.execute("INSERT OR IGNORE INTO effects VALUES (?)", (what,))
        con.close()


def build(checkpoint: str, log: str, pause: float = 0.4, db: str | None = None) -> packlab.Pipeline:
    """source -> square (fan-out over ELEMENTS, ``pause`` s each) -> total -> summary."""
    pipe = packlab.Pipeline("crash", checkpoint=checkpoint)

    @pipe.stage
    def source(log=log, db=db):
        effect(log, "source", db)
        return list(range(ELEMENTS))

    @pipe.stage(map_over="source")
    def square(source, log=log, pause=pause, db=db):
        time.sleep(pause)  # long enough for the test to kill the driver between elements
        effect(log, f"square-{source}", db)
        return source * source

    @pipe.stage
    def total(square, log=log, db=db):
        effect(log, "total", db)
        return sum(square)

    @pipe.stage
    def summary(source, total, log=log, db=db):
        effect(log, "summary", db)
        return {"n": len(source), "total": total}

    return pipe


def main(checkpoint: str, log: str) -> None:
    warnings.simplefilter("ignore", packlab.PacklabWarning)
    with packlab.launch(workers=1, cores=1, memory="1GiB", security=False, wait=True) as pc:
        print("started", flush=True)
        run = build(checkpoint, log).run(pc, resume=True)
        out = {"results": run.results, "cached": run.cached, "computed": run.computed}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
