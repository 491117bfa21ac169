"""Job queue: throughput against raw Dask, the policy engine alone, memory per queued job.

    python -m benchmarks queue            # 10,000 jobs; 1,000,000 policy ops; 1,000,000 queued
    python -m benchmarks queue --quick    # 2,000 jobs; 100,000 ops; 100,000 queued

Memory is measured with tracemalloc: every allocation made while creating and queueing
the jobs (Job record, its first event, the queue's id index, the policy's entries),
divided by the number of jobs. The payload bytes are shared by all jobs, so they are
excluded, as the target ("beyond its payload") asks.
"""

from __future__ import annotations

import gc
import os
import random
import tempfile
import time
import tracemalloc
import uuid
import warnings

import packlab
from packlab.queue import Job, JobQueue, get_policy

from .table import Row, best_of


def _inc(x):
    return x + 1


def _throughput(n: int) -> list[Row]:
    g = f"{n:,} trivial jobs, LocalCluster 2 workers x 1 thread (TLS)"
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=2, cores=1, memory="1GiB", wait=True)
    with pc, tempfile.TemporaryDirectory() as d:
        client = pc.client
        client.gather(client.map(_inc, range(200), pure=False))  # warm up

        def raw_map():
            client.gather(client.map(_inc, range(n), pure=False))

        def queue(max_in_flight=None, tag=""):
            path = os.path.join(d, f"q{tag}-{uuid.uuid4().hex}.db")
            with JobQueue(pc, store=path, max_in_flight=max_in_flight) as q:
                q.map(_inc, range(n))
                q.wait()
                return q.stats()["max_in_flight"]

        t_raw = best_of(raw_map, repeat=2)
        rows.append(Row(g, "raw client.map", n / t_raw, "jobs/s", baseline=True))
        cap = queue()
        t_q = best_of(queue, repeat=2)
        rows.append(Row(g, "JobQueue fifo, SQLite on", n / t_q, "jobs/s",
                        note=f"max_in_flight={cap} (auto); target >= 0.5x, aim 0.8x"))
        t_big = best_of(lambda: queue(256, "big"), repeat=1)
        rows.append(Row(g, "JobQueue fifo, max_in_flight=256", n / t_big, "jobs/s"))
        t_fs = best_of(lambda: _queue_policy(pc, d, n, "fair-share"), repeat=1)
        rows.append(Row(g, "JobQueue fair-share, SQLite on", n / t_fs, "jobs/s"))
    return rows


def _queue_policy(pc, d, n, policy):
    with JobQueue(pc, policy=policy, store=os.path.join(d, f"{policy}-{uuid.uuid4().hex}.db")) as q:
        for i in range(n):
            q.submit(_inc, i, owner=f"u{i % 4}")
        q.wait()


def _jobs(n: int, seed: int = 0) -> list[Job]:
    rng = random.Random(seed)
    now = time.time()
    return [Job(str(i), i, "f", b"", rank=rng.randrange(3), owner=f"u{rng.randrange(100)}",
                deadline=now + rng.random() * 3600, submitted=now + i * 1e-4) for i in range(n)]


def _policy_ops(name: str, ops: int, depth: int) -> float:
    """ops/s of interleaved push and pop (ops/2 each) with ``depth`` jobs queued."""
    p = get_policy(name)
    jobs = _jobs(depth + ops // 2)
    for j in jobs[:depth]:
        p.push(j)
    rest = jobs[depth:]
    now = time.time()
    fair = name == "fair-share"
    gc.disable()
    try:
        t0 = time.perf_counter()
        for j in rest:
            p.push(j)
            out = p.pop(now)
            if fair:
                p.finished(out, 0.01, now)
        dt = time.perf_counter() - t0
    finally:
        gc.enable()
    return ops / dt


def _memory_per_job(name: str, n: int) -> float:
    payload = b"x" * 100  # shared: "beyond its payload"
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    p = get_policy(name)
    index = {}
    now = time.time()
    for i in range(n):
        j = Job(uuid.uuid4().hex[:12], i, "mod.fn", payload, owner=f"u{i % 100}", rank=i % 3,
                deadline=now + 3600 + i, submitted=now)
        j.events.append((now, "submitted", "owner=u1 priority=normal"))
        index[j.id] = j
        p.push(j)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del index, p
    return used / n


def run(quick: bool = False) -> list[Row]:
    rows = _throughput(2000 if quick else 10_000)
    ops, depth = (100_000, 10_000) if quick else (1_000_000, 100_000)
    g = f"policy engine in process: {ops:,} push+pop ops, {depth:,} queued"
    for i, name in enumerate(("fifo", "priority", "fair-share", "deadline")):
        note = "target >= 200,000 ops/s" if name in ("fair-share", "deadline") else ""
        rows.append(Row(g, name, _policy_ops(name, ops, depth), "ops/s", baseline=i == 0, note=note))
    n = 100_000 if quick else 1_000_000
    g = f"memory per queued job, {n:,} queued (tracemalloc, beyond the payload)"
    for i, name in enumerate(("fifo", "fair-share", "deadline")):
        rows.append(Row(g, name, _memory_per_job(name, n), "B/job", baseline=i == 0, higher_is_better=False,
                        note="target < 2048 B" if i == 0 else ""))
    return rows
