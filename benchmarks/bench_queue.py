"""Job queue: throughput against raw Dask, the policy engine alone, memory per queued job.

    python -m benchmarks queue            # 10,000 and 100,000 jobs; 1,000,000 policy ops; 1,000,000 queued
    python -m benchmarks queue --quick    # 2,000 and 10,000 jobs; 100,000 ops; 100,000 queued

Throughput is raw ``client.map`` against ``JobQueue`` (fair share, SQLite store, driver
lease) on the same cluster, and against the queue with ``packlab.queue.place-tiny-jobs``
off (its tiny jobs then wait in the scheduler's queue as raw ``client.map``'s do),
interleaved so all three see the same load. While a queue runs,
another process times ``packlab queue requeue/cancel/ls/stats`` (each answer).

Memory is measured with tracemalloc: every allocation made while creating and queueing
the jobs (Job record, its first event, the queue's id index, the policy's entries),
divided by the number of jobs. The payload bytes are shared by all jobs, so they are
excluded, as the target ("beyond its payload") asks.
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
import warnings

import dask

import packlab
from packlab.queue import Job, JobQueue, get_policy

from .table import Row


def _inc(x):
    return x + 1


# Another process asks the CLI while the queue runs: each command's answer time, in a
# process that imported packlab once (so Python's start-up is not counted).
_ASKER = r"""
import sqlite3, sys, time, json
from click.testing import CliRunner
from packlab.cli import main
import packlab.cli.queue  # imported once, before the clock runs (the CLI imports it lazily)
store, stop = sys.argv[1], sys.argv[2]
import os
worst, n, errors = {}, {}, []
run = CliRunner().invoke
def timed(name, args):
    t0 = time.perf_counter()
    r = run(main, ["queue", *args, "--store", store])
    dt = time.perf_counter() - t0
    if r.exit_code != 0:
        errors.append(f"{name}: {r.output.strip()[-200:]} {r.exception!r}")
    worst[name] = max(worst.get(name, 0.0), dt); n[name] = n.get(name, 0) + 1
con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
while not os.path.exists(stop):
    timed("stats", ["stats"])
    timed("ls", ["ls", "--limit", "20"])
    row = con.execute("SELECT id FROM jobs WHERE status='queued' ORDER BY seq DESC LIMIT 1").fetchone()
    if row:
        timed("cancel", ["cancel", row[0]])
        t0 = time.monotonic()
        while (st := con.execute("SELECT status FROM jobs WHERE id=?", row).fetchone()[0]) in (
                "queued", "running", "retrying"):
            if time.monotonic() - t0 > 30: break
            time.sleep(0.01)
        if st == "cancelled":  # not when it finished before the cancel reached it
            timed("requeue", ["requeue", row[0]])
    time.sleep(0.05)
print(json.dumps({"worst": worst, "n": n, "errors": errors[:3]}))
"""


def _rss_peak(stop, out):
    import psutil

    p, peak = psutil.Process(), 0
    while not stop.is_set():
        peak = max(peak, p.memory_info().rss)
        stop.wait(0.05)
    out.append(peak)


def _cpu() -> tuple[float, float]:
    """CPU seconds so far of this process (driver, client and scheduler) and of its
    children (the workers): a figure that another load on the machine hardly moves."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    kids = 0.0
    for ch in me.children(recursive=True):
        try:
            c = ch.cpu_times()
            kids += c.user + c.system
        except psutil.Error:
            pass
    return t.user + t.system, kids


def _fair(pc, d, n, subscribe=False):
    path = os.path.join(d, f"fs-{uuid.uuid4().hex}.db")
    with JobQueue(pc, policy="fair-share", store=path) as q:
        for i in range(n):
            q.submit(_inc, i, owner=f"u{i % 4}")
        q.wait()
        return q.stats()["max_in_flight"], q._store.commits


def _throughput(n: int, repeat: int) -> list[Row]:
    g = f"{n:,} trivial jobs, LocalCluster 2 workers x 1 thread (TLS); store, lease and fair share on"
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=2, cores=1, memory="1GiB", wait=True)
    with pc, tempfile.TemporaryDirectory() as d:
        client = pc.client
        client.gather(client.map(_inc, range(200), pure=False))  # warm up
        _fair(pc, d, 500)
        raw, fair, off, info = [], [], [], {}
        cpu = {"raw": [0.0, 0.0], "fair": [0.0, 0.0], "off": [0.0, 0.0]}

        def timed(what, fn):
            c0, t0 = _cpu(), time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            c1 = _cpu()
            cpu[what][0] += c1[0] - c0[0]
            cpu[what][1] += c1[1] - c0[1]
            return dt, out

        def unplaced():
            with dask.config.set({"packlab.queue.place-tiny-jobs": False}):
                return _fair(pc, d, n)

        for _ in range(repeat):  # interleaved: all three see the same load on a shared machine
            raw.append(timed("raw", lambda: client.gather(client.map(_inc, range(n), pure=False)))[0])
            dt, (info["cap"], info["commits"]) = timed("fair", lambda: _fair(pc, d, n))
            fair.append(dt)
            off.append(timed("off", unplaced)[0])
        t_raw, t_fair, t_off = min(raw), min(fair), min(off)

        def per_job(what):
            us = [1e6 * c / (n * repeat) for c in cpu[what]]
            return f"CPU per job: driver+scheduler {us[0]:.0f} us, workers {us[1]:.0f} us"

        rows.append(Row(g, "raw client.map", n / t_raw, "jobs/s", baseline=True,
                        note=f"best of {repeat}; {per_job('raw')}"))
        rows.append(Row(g, "JobQueue fair-share", n / t_fair, "jobs/s",
                        note=f"target >= 0.8x; max_in_flight={info['cap']}, {info['commits']} commits; "
                             f"{per_job('fair')}"))
        rows.append(Row(g, "JobQueue, place-tiny-jobs off", n / t_off, "jobs/s",
                        note=f"tiny jobs queued on the scheduler as any task; {per_job('off')}"))
        rows += _cli_latency(pc, d, n)
    return rows


def _cli_latency(pc, d, n: int) -> list[Row]:
    g = f"packlab queue CLI from another process while {n:,} jobs run (worst answer)"
    path = os.path.join(d, f"cli-{uuid.uuid4().hex}.db")
    stop = os.path.join(d, "stop-" + uuid.uuid4().hex)
    with JobQueue(pc, policy="fair-share", store=path) as q:
        jobs = q.map(_inc, range(n), owner="u0")
        asker = subprocess.Popen([sys.executable, "-c", _ASKER, path, stop], stdout=subprocess.PIPE,
                                 text=True)
        q.wait(jobs)
        open(stop, "w").close()
        out, _ = asker.communicate(timeout=120)
        q.wait()
    res = json.loads(out.strip().splitlines()[-1])
    rows = []
    for i, name in enumerate(("requeue", "cancel", "ls", "stats")):
        worst = res["worst"].get(name, float("nan"))
        note = f"{res['n'].get(name, 0)} calls; target < 1 s"
        if i == 0 and res["errors"]:
            note += f"; errors: {res['errors']}"
        rows.append(Row(g, f"queue {name}", worst, "s", baseline=i == 0, higher_is_better=False, note=note))
    return rows


def _big(n: int) -> list[Row]:
    g = f"{n:,} trivial jobs, fair share, store and lease on: the driver's memory"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        pc = packlab.launch(workers=2, cores=1, memory="1GiB", wait=True)
    with pc, tempfile.TemporaryDirectory() as d:
        client = pc.client
        client.gather(client.map(_inc, range(200), pure=False))
        gc.collect()
        import psutil

        base = psutil.Process().memory_info().rss
        stop, peak = threading.Event(), []
        th = threading.Thread(target=_rss_peak, args=(stop, peak))
        th.start()
        t0 = time.perf_counter()
        _fair(pc, d, n)
        t_q = time.perf_counter() - t0
        stop.set()
        th.join()
        gc.collect()
        after = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        client.gather(client.map(_inc, range(n), pure=False))
        t_raw = time.perf_counter() - t0
    mib = 2**20
    return [Row(g, "raw client.map", n / t_raw, "jobs/s", baseline=True, note="run after the queue"),
            Row(g, "JobQueue fair-share", n / t_q, "jobs/s",
                note=f"driver (scheduler in it) peak RSS +{(peak[0] - base) / mib:.0f} MiB during, "
                     f"{(after - base) / mib:+.0f} MiB after close")]


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
    rows = _throughput(2000 if quick else 10_000, 2 if quick else 3)
    rows += _big(10_000 if quick else 100_000)
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
