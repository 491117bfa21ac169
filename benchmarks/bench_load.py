"""Load: a deep fair-share queue for a sustained run, and a large fan-out resumed after a
driver kill.

    python -m benchmarks load            # 100,000 jobs from 10 owners; 10,000 fan-out units
    python -m benchmarks load --quick    # 5,000 jobs; 500 units

* Queue: ``JobQueue`` with ``FairShare(weights=...)`` (10 owners, weights 1 to 4) and a
  SQLite store on a local cluster (2 workers x 1 thread, TLS, telemetry on). Each job
  works ``WORK`` s (a busy loop) and appends its index to a log (how often it ran). A
  feeder tops each owner's backlog up in waves, so the queue stays deep until every job
  is submitted. Measured: jobs/s (against raw ``client.map`` of the same function); the
  driver's RSS (the scheduler runs in it) every 0.5 s: start, peak, end, slope over the
  second half; the store afterwards (``PRAGMA integrity_check``, every job ``done`` with
  one ``done`` event, every job executed once); fair share: each owner's share of
  worker-timed run time in sliding windows while every owner had work queued, against
  its weight's share; and the panel's data path (``Panel.refresh()`` on the store, in
  another process, at ``packlab.panel.interval``): refresh time p50/p95, refreshes
  that saw nothing new.
* Pipeline: ``benchmarks/load_driver.py`` (a ``map_over`` stage of N units, each a few
  ms of work and an idempotent file effect) in a subprocess, SIGKILLed with its workers
  at a random point mid fan-out, then run again. Measured: units checkpointed before the
  kill, units run again after it (only unfinished ones may be), the resume's time and
  its time before the first unit went to the queue (verifying the intact checkpoints,
  opening the queue), every effect present once and every checkpoint verifying.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter

import packlab
from packlab import config
from packlab.queue import JobQueue
from packlab.queue.policies import FairShare
from packlab.units import seconds

from . import load_checks as lc
from .table import Row

WORK = 0.002  # seconds of work per job
WEIGHTS = {f"o{k}": w for k, w in enumerate((1, 1, 1, 1, 2, 2, 2, 3, 3, 4))}
TOLERANCE = 0.10  # fair share: worst relative deviation of an owner's share from its weight's


def _work(i: int, log: str) -> int:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < WORK:
        pass
    with open(log, "a") as f:
        f.write(f"{i}\n")
    return i


def _rss(stop: threading.Event, out: list) -> None:
    import psutil

    p = psutil.Process()
    while True:
        out.append((time.time(), p.memory_info().rss))
        if stop.wait(0.5):
            return


def _feed(q: JobQueue, n: int, log: str, done: Counter, deep: int) -> None:
    """Submit ``n`` jobs in waves, topping each owner's backlog up to ``deep`` whenever it
    falls under half that."""
    sent: Counter = Counter()
    i = 0
    while i < n:
        need = {o: deep - (sent[o] - done[o]) for o in WEIGHTS if sent[o] - done[o] < deep // 2}
        # owners interleaved, so none waits for another's whole wave to be submitted
        wave = [o for _, o in sorted((k / c, o) for o, c in need.items() for k in range(c))]
        for o in wave[: n - i]:
            q.submit(_work, i, owner=o, log=log)
            sent[o] += 1
            i += 1
        q.flush()
        time.sleep(0.2)


def _executions(log: str) -> Counter:
    with open(log) as f:
        return Counter(int(line) for line in f if line.strip())


def queue_load(n: int, deep: int, window: float) -> list[Row]:
    g = f"{n:,} jobs of {WORK * 1e3:.0f} ms, 10 owners, FairShare(weights 1-4), 2 workers x 1 thread"
    warnings.simplefilter("ignore", packlab.PacklabWarning)
    d = tempfile.mkdtemp(prefix="bench-load-", dir=os.environ.get("PACKLAB_BENCH_DIR"))
    try:
        with packlab.launch(workers=2, cores=1, memory="1GiB", wait=True) as pc:
            client = pc.client
            client.gather(client.map(_work, range(200), log=os.path.join(d, "warm"), pure=False))
            store, log = os.path.join(d, "load.db"), os.path.join(d, "runs")
            stop, rss = threading.Event(), []
            sampler = threading.Thread(target=_rss, args=(stop, rss), daemon=True)
            done: Counter = Counter()
            q = JobQueue(pc, policy=FairShare(weights=WEIGHTS), store=store)
            q.subscribe(lambda ev: done.update((ev.owner,)), kinds=["done"])
            panel_stop = os.path.join(d, "panel-stop")
            interval = seconds(config.get("panel.interval"), "interval")
            flush = seconds(config.get("telemetry.flush-interval"), "flush-interval")
            sampler.start()
            t0 = time.time()
            fed = threading.Thread(target=_feed, args=(q, n, log, done, deep), daemon=True)
            fed.start()
            time.sleep(2.0)  # the store holds telemetry once the first batch is written
            reader = subprocess.Popen([sys.executable, "-c", lc.PANEL_READER, store, panel_stop,
                                       str(interval)], stdout=subprocess.PIPE, text=True)
            fed.join()
            q.wait()
            took = time.time() - t0
            open(panel_stop, "w").close()
            panel_out, _ = reader.communicate(timeout=600)
            q.close()
            stop.set()
            sampler.join()
            m = min(n, 10_000)  # raw client.map of the same function, for the ratio
            raw_log = os.path.join(d, "raw")
            t1 = time.perf_counter()
            client.gather(client.map(_work, range(m), log=raw_log, pure=False))
            t_raw = time.perf_counter() - t1
        check = lc.integrity(store, n, _executions(log))
        fair = lc.fair_share(store, WEIGHTS, window, window / 5)
        mem = lc.rss_figures(rss)
        panel = lc.panel_figures(json.loads(panel_out.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    verdict = "ok" if check["ok"] else f"FAILED {check}"
    return [
        Row(g, "raw client.map", m / t_raw, "jobs/s", baseline=True, note=f"{m:,} jobs, after the queue"),
        Row(g, "JobQueue fair-share", n / took, "jobs/s",
            note=f"{took:.0f} s wall, waves of up to {deep} per owner; store {verdict}: integrity_check "
                 f"{check['integrity_check']}, {check['statuses']}, done events/job "
                 f"{check['done_events_per_job']}, executions/job {check['executions_per_job']}"),
        Row(g + ": driver RSS", "peak", mem["peak"], "MiB", baseline=True, higher_is_better=False,
            note=f"start {mem['start']:.0f}, end {mem['end']:.0f} MiB (scheduler in the driver; "
                 f"{(mem['end'] - mem['start']) * 2**20 / n:,.0f} B per job); slope over the second half "
                 f"{mem['slope']:+.1f} MiB/min"),
        Row(g + ": fair share", f"worst window of {window:.0f} s", fair["worst"] * 100, "%", baseline=True,
            higher_is_better=False,
            note=f"|share - weight share| / weight share of worker-timed run time, worst owner; "
                 f"{fair['windows']} windows while all owners had work queued ({fair['stretch']:.0f} of "
                 f"{fair['run']:.0f} s); mean {fair['mean'] * 100:.1f} %"),
        Row(g + ": fair share", "whole stretch", fair["whole"] * 100, "%", higher_is_better=False,
            note=f"{'within' if fair['whole'] <= TOLERANCE else 'OUTSIDE'} tolerance {TOLERANCE:.0%}; "
                 f"weighted usage of owners at most {fair['spread']:.2f} s apart; jobs: median "
                 f"{fair['median'] * 1e3:.1f} ms, longest {fair['longest']:.2f} s (one such job is a whole "
                 f"window's service of a weight-1 owner on a loaded machine)"),
        Row(g + ": panel refresh", "p50", panel["p50"] * 1e3, "ms", baseline=True, higher_is_better=False,
            note=f"{panel['n']} refreshes at {interval:g} s from another process; first half p50 "
                 f"{panel['first_half_p50'] * 1e3:.0f} ms, second half "
                 f"{panel['last_half_p50'] * 1e3:.0f} ms"),
        Row(g + ": panel refresh", "p95", panel["p95"] * 1e3, "ms", higher_is_better=False,
            note=f"max {panel['max'] * 1e3:.0f} ms; {panel['late']} ran past the interval; "
                 f"{panel['stale']} saw nothing new (telemetry lands every {flush:g} s): longest without "
                 f"new data {panel['gap']:.1f} s; errors {panel['errors'] or 'none'}"),
    ]


def _runs(log: str) -> Counter:
    if not os.path.exists(log):
        return Counter()
    with open(log) as f:
        return Counter(line.strip() for line in f if line.strip())


def pipeline_resume(units: int, seed: int = 0) -> list[Row]:
    from packlab.pipeline import CheckpointStore

    g = f"pipeline: {units:,}-unit fan-out, driver SIGKILLed mid fan-out, then resumed"
    d = tempfile.mkdtemp(prefix="bench-load-pipe-", dir=os.environ.get("PACKLAB_BENCH_DIR"))
    ckpt, log = os.path.join(d, "ckpt"), os.path.join(d, "runs")
    cmd = [sys.executable, "-m", "benchmarks.load_driver", ckpt, log, str(units)]
    at = random.Random(seed).uniform(0.3, 0.6)  # the fraction of units run when it is killed
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             start_new_session=True)
        try:
            assert p.stdout.readline().strip() == "started"
            t0 = time.time()
            while sum(_runs(log).values()) < at * units:
                if p.poll() is not None or time.time() - t0 > 1800:
                    raise RuntimeError("the pipeline driver ended before it was killed")
                time.sleep(0.2)
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=60)
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        before = _runs(log)
        store = CheckpointStore(ckpt, "load")
        key_dir = os.path.join(ckpt, "outputs", "unit")
        t1 = time.perf_counter()
        names = [k for k in os.listdir(key_dir) if "-" in k] if os.path.isdir(key_dir) else []
        intact = {int(k.rsplit("-", 1)[1]) for k in names if store.check("unit", k) is None}
        t_verify = time.perf_counter() - t1
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if r.returncode != 0:
            raise RuntimeError(f"the resumed driver failed: {r.stderr[-2000:]}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        after = _runs(log)
        again = {int(k.split("-")[1]) for k in after if after[k] > before.get(k, 0)}
        effects = os.listdir(os.path.join(d, "effects"))
        good = sum(open(os.path.join(d, "effects", str(i))).read() == str(i * i) for i in range(units)
                   if str(i) in effects)
        final = sorted(k for k in os.listdir(key_dir) if "-" in k)  # the units (not the stage's index)
        t2 = time.perf_counter()
        bad = [k for k in final if store.check("unit", k) is not None]
        t_all = time.perf_counter() - t2
    finally:
        shutil.rmtree(d, ignore_errors=True)
    in_flight = {int(k.split("-")[1]) for k in before} - intact
    redone_intact = again & intact
    ok = (res["ok"] and res["total"] == sum(i * i for i in range(units)) and not redone_intact
          and again == set(range(units)) - intact and good == units and len(effects) == units
          and len(final) == units and not bad)
    pre = (res["first_submitted"] - res["unit_started"]) if res["first_submitted"] else float("nan")
    return [
        Row(g, "resume (driver run)", res["seconds"], "s", baseline=True, higher_is_better=False,
            note=f"{'ok' if ok else 'FAILED'}: killed at {at:.0%} of units run; {len(intact):,} checkpointed "
                 f"before the kill ({res['units_cached']:,} reused), {len(again):,} run after "
                 f"({len(redone_intact)} of them intact before: must be 0; {len(in_flight)} ran before "
                 f"but were not checkpointed); effects {good:,}/{units:,} once; "
                 f"{len(final) - len(bad):,}/{units:,} checkpoints verify"),
        Row(g, "resume: before the first unit ran", pre, "s", higher_is_better=False,
            note=f"verifying {res['units_cached']:,} intact checkpoints, opening the queue"),
        Row(g, "verify the intact checkpoints (offline)", t_verify, "s", higher_is_better=False,
            note=f"{len(names):,} checkpoint directories after the kill; all {units:,} at the end: "
                 f"{t_all:.2f} s"),
    ]


def run(quick: bool = False) -> list[Row]:
    rows = queue_load(5_000 if quick else 100_000, 300 if quick else 1500, 10.0 if quick else 60.0)
    rows += pipeline_resume(500 if quick else 10_000)
    return rows
