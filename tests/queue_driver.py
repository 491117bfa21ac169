"""A driver process for the resume tests: it submits jobs to a JobQueue on its own local
cluster and waits; the test kills it (and its workers) with SIGKILL mid-run.

    python tests/queue_driver.py STORE LOG EFFECTS_DB N   # N keyed jobs with side effects
    python tests/queue_driver.py retry STORE LOG BASE     # one job that fails its first attempt
"""

from __future__ import annotations

import sqlite3
import sys
import time
import warnings

import packlab


def effect(key: str, log: str, db: str) -> str:
    """A job with two side effects: a raw append (shows at-least-once) and a row
    inserted idempotently on the key (exactly once, however often the job runs)."""
    time.sleep(0.05)
    with open(log, "a") as f:
        f.write(key + "\n")
    con = sqlite3.connect(db, timeout=30)
    with con:
        con.execute("INSERT OR IGNORE INTO effects VALUES (?)", (key,))
    con.close()
    return key


def fail_once(log: str) -> int:
    """Log when each attempt starts (epoch s); the first one fails, a transient error."""
    with open(log, "a") as f:
        f.write(f"{time.time()!r}\n")
    with open(log) as f:
        n = sum(1 for _ in f)
    if n == 1:
        raise ConnectionError("the first attempt fails")
    return n


def retry_main(store: str, log: str, base: str) -> None:
    warnings.simplefilter("ignore", packlab.PacklabWarning)
    with packlab.launch(workers=1, cores=1, memory="1GiB", security=False, wait=True) as pc:
        q = packlab.JobQueue(pc, store=store)
        q.submit(fail_once, log, retry=packlab.Retry(attempts=2, base=base, jitter=False))
        q.flush()
        print("submitted", flush=True)
        q.wait()


def main(store: str, log: str, db: str, n: int) -> None:
    warnings.simplefilter("ignore", packlab.PacklabWarning)
    with packlab.launch(workers=2, cores=1, memory="1GiB", security=False, wait=True) as pc:
        q = packlab.JobQueue(pc, store=store, max_in_flight=4)
        for i in range(n):
            q.submit(effect, f"k{i}", log, db, key=f"k{i}")
        q.flush()
        print("submitted", flush=True)
        q.wait()
        print("finished", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "retry":
        retry_main(*sys.argv[2:5])
    else:
        main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
