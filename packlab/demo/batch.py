"""The demo's batch: a :class:`packlab.JobQueue` run of two owners under fair share, a
flaky job that succeeds on retry with backoff, and one that ends in the dead-letter queue.

The jobs' functions live here, in an importable module, so Dask's workers can unpickle
them (a ``__main__`` function would not travel to a worker process).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any


def work(seconds: float) -> float:
    """A job: sleep ``seconds`` and return them (a stand-in for real work)."""
    time.sleep(seconds)
    return seconds


def flaky(marker: str) -> str:
    """Fail on the first call (a service that is not up yet), succeed on the next."""
    if not os.path.exists(marker):
        with open(marker, "w"):
            pass
        raise ConnectionError("the service is not up yet (first call)")
    return "ok on retry"


def broken() -> float:
    """Always fail with a permanent error: the dead-letter queue's case."""
    return float("threshold = oops".split("=")[1])


@dataclass
class BatchResult:
    """What the batch did: jobs per owner, the flaky job's attempts, the dead letters."""

    jobs: int
    per_owner: dict[str, int]
    fair_share_ok: bool
    flaky_attempts: int
    flaky_result: str
    dead: list[str]
    seconds: float


def run(pc: Any, store: str, scratch: str, jobs: int = 60, nap: float = 0.02) -> BatchResult:
    """Run the batch on cluster ``pc`` with the queue's store ``store`` (the cluster's
    telemetry follows it there); ``scratch`` is a folder for the flaky job's marker."""
    from ..queue import JobQueue, Retry

    t0 = time.perf_counter()
    with JobQueue(pc, policy="fair-share", store=store, max_in_flight=4) as q:
        alice = q.map(work, [nap] * jobs, owner="alice", priority="normal")
        while sum(j.done() for j in alice) < 4:
            time.sleep(0.01)
        bob = q.map(work, [nap] * max(2, jobs // 6), owner="bob", priority="high")
        flake = q.submit(
            flaky,
            os.path.join(scratch, "flaky-called"),
            owner="bob",
            retry=Retry(attempts=4, base="0.2s", cap="1s"),
        )
        dead = q.submit(
            broken, owner="alice", retry=Retry(attempts=2, base="0.1s", cap="0.2s", give_up_on=(ValueError,))
        )
        q.wait()
        bob_last = max(_end(j) for j in bob)
        alice_after = sum(_end(j) > bob_last for j in alice)
        result = flake.result(timeout=60)
        dead_ids = [d.id for d in q.dead_letters()]
        return BatchResult(
            len(alice) + len(bob) + 2,
            {"alice": len(alice) + 1, "bob": len(bob) + 1},
            alice_after > 0,
            flake.attempts,
            result,
            dead_ids if dead.id in dead_ids else [],
            time.perf_counter() - t0,
        )


def _end(job: Any) -> float:
    return next(t for t, kind, _ in job.events if kind == "done")


__all__ = ["BatchResult", "broken", "flaky", "run", "work"]
