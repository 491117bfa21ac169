"""A queue's memory stays bounded by its unfinished jobs: a finished job nobody holds is
freed (its record is in the store), yet counts, ``q.jobs()``, ``q.get`` and ``requeue``
still see it (found by ``python -m benchmarks load``: 1.7 KB per job, for ever)."""

from __future__ import annotations

import gc
import time

import pytest

from packlab.queue import CircuitBreaker, JobQueue, Retry
from packlab.queue.job import Job


def _jobs_in_memory() -> int:
    gc.collect()
    return sum(type(o) is Job for o in gc.get_objects())


def _fail(x):
    raise PermissionError(f"no {x}")


def test_finished_jobs_nobody_holds_are_freed_and_read_back_from_the_store(local_cluster, tmp_path):
    before = _jobs_in_memory()
    with JobQueue(local_cluster, store=str(tmp_path / "q.db")) as q:
        kept = q.submit(abs, -7)
        for i in range(1000):
            q.submit(abs, -i, owner=f"u{i % 3}")  # not kept: the user holds none of them
        q.wait(timeout=120)
        # The queue's threads let go of the last ones shortly after (later on a busy machine).
        deadline = time.monotonic() + 30
        while _jobs_in_memory() - before >= 50 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _jobs_in_memory() - before < 50  # not 1,501: only the kept one and a few in flux
        assert q.stats()["counts"] == {"done": 1001}
        everything = q.jobs()
        assert len(everything) == 1001 and everything[0] is kept  # in submission order
        assert sorted(j.result() for j in everything[1:]) == sorted(range(1000))
        one = everything[500]
        del everything
        assert q.get(one.id) is one and one.result() == 499  # held again: the same object
        assert q.jobs(status="done")[0] is kept


def test_a_freed_dead_job_is_requeued_and_counted_once(local_cluster, tmp_path):
    with JobQueue(local_cluster, store=str(tmp_path / "q.db"),
                  retry=Retry(attempts=1, give_up_on=(PermissionError,)),
                  breaker=CircuitBreaker(threshold=1000)) as q:  # no breaker holding them
        ids = [q.submit(_fail, i).id for i in range(20)]
        q.wait(timeout=60)
        gc.collect()
        assert q.stats()["counts"] == {"dead": 20}
        job = q.requeue(ids[3])
        assert job.id == ids[3] and job.status in ("queued", "running", "retrying", "dead")
        q.wait(timeout=60)
        assert q.stats()["counts"] == {"dead": 20}  # the same job, dead again: not 21
        kinds = [k for _, k, _ in q.get(ids[3]).events]
        assert len(q.jobs()) == 20 and kinds.count("requeued") == 1 and kinds.count("dead") == 2
        with pytest.raises(PermissionError, match="no 3"):
            q.get(ids[3]).result()
