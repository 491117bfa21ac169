"""Tiny jobs go straight to a worker each (packlab/queue/spread.py), not through the
scheduler's queue: on a real LocalCluster, the scheduler's own state shows it; a slow
worker is given less; a worker killed while its jobs wait there loses none of them."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import cloudpickle
import dask
import pytest
from support import small_cluster

from packlab.queue import JobQueue
from packlab.queue.spread import Spread

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def cluster():
    with small_cluster() as pc:
        yield pc


def where(i):
    from distributed import get_worker

    return i, get_worker().address


def _sample(client, stop, out):
    """The scheduler's queued and processing task counts, sampled until ``stop``."""
    def counts(dask_scheduler):
        return len(dask_scheduler.queued), sum(len(ws.processing) for ws in dask_scheduler.workers.values())

    while not stop.is_set():
        try:
            out.append(client.run_on_scheduler(counts))
        except Exception:
            pass
        stop.wait(0.01)


@pytest.mark.parametrize("placed", [True, False], ids=["placed", "place-tiny-jobs-off"])
def test_tiny_jobs_wait_on_the_workers_not_in_the_schedulers_queue(cluster, tmp_path, placed):
    client = cluster.client
    if placed:  # raw client.map of as many tiny tasks: Dask queues them on the scheduler
        stop, raw = threading.Event(), []
        t = threading.Thread(target=_sample, args=(client, stop, raw))
        t.start()
        assert client.gather(client.map(where, range(3000), pure=False))[5][0] == 5
        stop.set()
        t.join()
        assert max(q for q, _ in raw) > 100

    with dask.config.set({"packlab.queue.place-tiny-jobs": placed}), \
            JobQueue(cluster, store=str(tmp_path / "q.db")) as q:
        stop, seen = threading.Event(), []
        t = threading.Thread(target=_sample, args=(client, stop, seen))
        t.start()
        jobs = q.map(where, range(3000))
        q.wait(jobs)
        stop.set()
        t.join()
        assert q._engine.core.short  # the jobs were seen to be tiny
        results = [j.result() for j in jobs]
    assert [i for i, _ in results] == list(range(3000))
    assert len({w for _, w in results}) == 2  # both workers ran them
    late = seen[len(seen) // 2:]  # once the queue knew they were tiny
    if placed:
        assert max(q for q, _ in late) == 0, "queue jobs waited in the scheduler's queue"
        assert max(p for _, p in late) > 2 * 2  # more in flight than the 2 threads: on the workers
    else:  # Dask's own queuing, as for any task
        assert max(q for q, _ in late) > 0


def test_a_worker_killed_while_tiny_jobs_wait_on_it_loses_none(cluster, tmp_path):
    client = cluster.client
    with JobQueue(cluster, store=str(tmp_path / "q.db")) as q:
        warm = q.map(where, range(500))
        q.wait(warm)
        assert q._engine.core.short
        jobs = q.map(where, range(4000))
        victim = sorted(client.nthreads())[0]
        time.sleep(0.3)
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        q.wait(jobs, timeout=240)
        assert [j.status for j in jobs] == ["done"] * 4000
        assert sorted(j.result()[0] for j in jobs) == list(range(4000))


def test_spread_gives_a_slow_worker_less_and_forgets_a_worker_that_left():
    s = Spread()
    s.workers({"a": 1, "b": 1})
    running = {}
    # "a" never finishes anything; "b" finishes everything it is given
    for round_ in range(5):
        ann = s.annotations([(f"{round_}-{i}", f"k{round_}-{i}") for i in range(4)], running)
        for i in range(4):
            if ann["workers"](f"k{round_}-{i}") == ["a"]:
                running[f"{round_}-{i}"] = None
    given_a = len(running)
    assert given_a == 4 < 20 - given_a  # "a": 2 of the first 4, then 1, 1, 0 and 0
    s.workers({"b": 1})  # "a" left
    ann = s.annotations([("x", "kx"), ("y", "ky")], running)
    assert [ann["workers"](k) for k in ("kx", "ky")] == [["b"], ["b"]]
    s.annotations([], {})  # its jobs are gone: so is its count
    assert "a" not in s._load
    s.workers({})
    assert s.annotations([("z", "kz")], {}) == {}  # no workers known: Dask places it
