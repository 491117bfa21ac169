"""A worker process killed with SIGKILL in the middle of a ``packlab.mapreduce`` and of a
queue run, at a random moment: the answer equals NumPy's, every job completes exactly once.

The workers are real processes under Dask's nanny, which starts a new one after the kill;
their pids come from the scheduler's worker records, and the signal is the kernel's.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import cloudpickle
import dask.array as da
import numpy as np
import pytest
import queue_driver

import packlab
from packlab.queue import JobQueue

from .drivers import dead, effects_db, query, record, runs

pytestmark = pytest.mark.slow
cloudpickle.register_pickle_by_value(sys.modules[__name__])
cloudpickle.register_pickle_by_value(queue_driver)

N, CHUNK = 4_000_000, 100_000  # 40 chunks, each held back 30 ms: a compute of ~0.6 s on 2 workers


@packlab.kernel
def poly(x):
    return x * x + 2.0 * x


def slow(block):
    time.sleep(0.03)
    return block


def worker_pids(client) -> dict[str, int]:
    """address -> pid of every worker, from the scheduler's records."""
    return client.run_on_scheduler(lambda dask_scheduler: {a: ws.pid for a, ws in
                                                           dask_scheduler.workers.items()})


def kill_a_worker(client, rng) -> int:
    """SIGKILL one live worker process, chosen at random; its pid."""
    pids = sorted(pid for pid in worker_pids(client).values() if not dead(pid))
    pid = rng.choice(pids)
    os.kill(pid, signal.SIGKILL)
    return pid


def back_to(client, n: int, gone: set[int]) -> None:
    """Wait until the nanny replaced the killed workers: ``n`` workers, none of ``gone``."""
    t0 = time.monotonic()
    while len(pids := worker_pids(client)) < n or gone & set(pids.values()):
        assert time.monotonic() - t0 < 120, f"the workers were not replaced: {pids}"
        time.sleep(0.05)


def test_a_worker_sigkilled_mid_mapreduce_gives_the_numpy_answer(chaos_cluster, chaos_rng, chaos_trials,
                                                                  figure):
    client = chaos_cluster.client
    x = da.arange(N, chunks=CHUNK, dtype="f8").map_blocks(slow)
    a = np.arange(N, dtype="f8")
    ref = np.sum(a * a + 2.0 * a)
    assert np.isclose(client.compute(packlab.mapreduce(poly, x)).result(), ref, rtol=1e-12)  # compiled
    t0 = time.monotonic()
    assert np.isclose(client.compute(packlab.mapreduce(poly, x)).result(), ref, rtol=1e-12)
    window = time.monotonic() - t0
    mid, kills, gone = 0, [], set()
    for trial in range(chaos_trials(3)):
        fut = client.compute(packlab.mapreduce(poly, x))
        t0 = time.monotonic()
        at = chaos_rng.uniform(0.1, 0.9) * window
        time.sleep(at)
        landed = not fut.done()  # the kill comes while partials are still being made
        gone.add(kill_a_worker(client, chaos_rng))
        got = fut.result(timeout=120)
        np.testing.assert_allclose(got, ref, rtol=1e-12, err_msg=f"trial {trial}: killed at {at:.3f} s")
        mid += landed
        kills.append(at)
        back_to(client, 2, gone)  # registered (it compiles the kernel while the next trial runs)
    figure("worker_kill_mapreduce", {"trials": len(kills), "mid": mid},
           f"worker SIGKILL mid-mapreduce: {len(kills)} trials, {mid} kills mid-compute (at "
           f"{min(kills):.2f}-{max(kills):.2f} s of a {window:.2f} s compute), every answer = NumPy's")
    assert mid >= len(kills) // 2


def test_a_worker_sigkilled_mid_queue_run_loses_and_duplicates_no_job(chaos_cluster, tmp_path, chaos_rng,
                                                                      chaos_trials, figure):
    client, n = chaos_cluster.client, 40
    totals = {"trials": 0, "kills": 0, "jobs": 0, "redone": 0, "failed_attempts": 0}
    for trial in range(chaos_trials(3)):
        d = tmp_path / f"t{trial}"
        d.mkdir()
        store, log, db = str(d / "q.db"), str(d / "log"), effects_db(str(d / "fx.db"))
        killed = []

        def killer(log=log, killed=killed):  # a kill at a random moment while the 50 ms jobs run
            for at in [chaos_rng.uniform(0.1, 0.8)]:
                while len(runs(log)) < at * n:
                    time.sleep(0.005)
                killed.append(kill_a_worker(client, chaos_rng))

        with JobQueue(chaos_cluster, store=store, max_in_flight=4) as q:
            for i in range(n):
                q.submit(queue_driver.effect, f"k{i}", log, db, key=f"k{i}")
            t = threading.Thread(target=killer)
            t.start()
            q.wait(timeout=120)
            t.join()
        keys = {f"k{i}" for i in range(n)}
        rec, counts = record(store), runs(log)
        assert set(rec) == keys and all(v == ("done", 1) for v in rec.values()), rec  # none lost, done once
        assert sorted(k for (k,) in query(db, "SELECT key FROM effects")) == sorted(keys)  # exactly once
        assert set(counts) == keys
        totals["trials"] += 1
        totals["kills"] += len(killed)
        totals["jobs"] += len(rec)
        totals["redone"] += sum(counts.values()) - n
        totals["failed_attempts"] += query(store, "SELECT COUNT(*) FROM events WHERE kind='failed'")[0][0]
        back_to(client, 2, set(killed))
    figure("worker_kill_queue", totals,
           f"worker SIGKILL mid-queue: {totals['trials']} runs, {totals['kills']} workers killed, "
           f"{totals['jobs']} jobs completed, lost 0, duplicated 0, {totals['redone']} jobs re-run by Dask "
           f"after a kill, {totals['failed_attempts']} attempts failed in the queue's record")
