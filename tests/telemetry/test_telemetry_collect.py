"""Telemetry collection against real clusters: the plugin, the queue's recorder, the store,
the monitor read back in another process, and the advisor over real anti-patterns."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import subprocess
import sys
import time
import warnings

import dask
import pytest

import packlab
from packlab.queue import CircuitBreaker
from packlab.telemetry import cost
from packlab.telemetry.pricing import Pricing
from packlab.telemetry.sinks import CallbackSink

FAST = {"packlab.telemetry.interval": "0.1s", "packlab.telemetry.flush-interval": "0.1s"}


@pytest.fixture(autouse=True)
def _fast_sampling():
    with dask.config.set(FAST):
        yield


def launch(**kw) -> packlab.PackCluster:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", packlab.PacklabWarning)
        kw.setdefault("workers", 2)
        kw.setdefault("memory", "1GiB")
        return packlab.launch(cores=1, wait=True, **kw)


def sleep_then(x, s=0.02):
    time.sleep(s)
    return x


def names(findings) -> list[str]:
    return [f.name for f in findings]


def test_a_cluster_records_tasks_workers_and_samples_in_an_owner_only_store(tmp_path):
    store = tmp_path / "t.db"
    with launch(store=str(store)) as pc:
        assert pc.telemetry.store == str(store)
        assert pc.client.gather(pc.client.map(sleep_then, range(12))) == list(range(12))
        snap = packlab.monitor(pc).snapshot()
        assert snap.jobs == 12 and snap.failure_rate == 0.0 and snap.workers == 2
        assert 0 < snap.utilisation <= 1 and 0.02 <= snap.duration_p50 <= snap.duration_p95
        addresses = set(pc.client.scheduler_info()["workers"])
    assert stat.S_IMODE(os.stat(store).st_mode) == 0o600
    con = sqlite3.connect(store)
    tasks = con.execute("SELECT prefix, worker, stop - start, outcome FROM tel_tasks").fetchall()
    assert len(tasks) == 12 and {t[0] for t in tasks} == {"sleep_then"}
    assert {t[3] for t in tasks} == {"memory"}
    assert {t[1] for t in tasks} <= addresses and all(t[2] >= 0.02 for t in tasks)
    workers = con.execute("SELECT worker, threads, memory, stop FROM tel_workers").fetchall()
    assert {w[0] for w in workers} == addresses and all(w[1] == 1 and w[2] == 2**30 and w[3] for w in workers)
    metrics = {m for (m,) in con.execute("SELECT DISTINCT metric FROM tel_samples")}
    assert {"cpu", "memory", "memory_peak", "spilled", "busy_seconds", "idle_seconds",
            "utilisation"} <= metrics
    busy = dict(con.execute("SELECT source, MAX(value) FROM tel_samples WHERE metric='busy_seconds' "
                            "GROUP BY source"))
    by_worker = dict(con.execute("SELECT worker, SUM(stop - start) FROM tel_tasks GROUP BY worker"))
    for w, secs in by_worker.items():  # busy thread-seconds are the tasks' compute time
        assert math.isclose(busy[w], secs, rel_tol=1e-9)


def test_telemetry_false_installs_nothing_and_the_temporary_store_goes_at_close():
    with launch(telemetry=False, workers=1) as pc:
        assert pc.telemetry is None
        with pytest.raises(packlab.PacklabError, match="cluster_or_store"):
            packlab.monitor(pc)
    with launch(workers=1) as pc:
        path = pc.telemetry.store
        assert os.path.exists(path) and pc.telemetry.temporary
    assert not os.path.exists(path)


def test_a_queue_on_the_clusters_client_is_recorded_too(tmp_path):
    qstore = str(tmp_path / "q.db")
    with launch(workers=1) as pc, packlab.JobQueue(pc.client, store=qstore) as q:
        q.wait([q.submit(sleep_then, 1)], timeout=60)
    con = sqlite3.connect(qstore)
    assert {k for (k,) in con.execute("SELECT kind FROM events")} >= {"submitted", "running", "done"}
    assert con.execute("SELECT COUNT(*) FROM tel_tasks WHERE job IS NOT NULL").fetchone()[0] == 1


def test_a_closed_queue_store_holds_the_run_while_its_cluster_still_runs(tmp_path):
    """Closing a queue writes the cluster's telemetry of the run into its store at once, so
    a report or dashboard opened right after (the cluster still up) sees it (it used to wait
    for the plugin's next 2 s flush: "holds no telemetry")."""
    qstore = str(tmp_path / "q.db")
    with launch(workers=1) as pc:
        with packlab.JobQueue(pc, store=qstore) as q:
            assert [j.result(timeout=60) for j in q.map(abs, range(-3, 0))] == [3, 2, 1]
        snap = packlab.monitor(qstore).snapshot()  # another reader of the file, cluster up
        assert snap.jobs == 3 and snap.failure_rate == 0


def test_a_queue_moves_the_clusters_telemetry_to_its_store_with_depth_per_class(tmp_path):
    qstore = str(tmp_path / "q.db")
    with launch() as pc:
        with packlab.JobQueue(pc, store=qstore, policy="priority") as q:
            jobs = [q.submit(sleep_then, i, 0.05, priority=p, owner=o)
                    for i, (p, o) in enumerate([("high", "ann"), ("low", "bob")] * 10)]
            q.wait(jobs, timeout=60)
            time.sleep(0.3)
            snap = packlab.monitor(pc).snapshot()
        assert pc.telemetry.store == qstore
    assert snap.jobs == 20 and snap.jobs_completed_today == 20 and snap.failure_rate == 0
    assert 0.05 <= snap.duration_p50 < 1
    con = sqlite3.connect(qstore)
    assert con.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 20  # the jobs and their telemetry
    assert con.execute("SELECT COUNT(DISTINCT job) FROM tel_tasks WHERE job IS NOT NULL").fetchone()[0] == 20
    sources = {s for (s,) in con.execute(
        "SELECT DISTINCT source FROM tel_samples WHERE metric='queue_depth'")}
    assert "" in sources and {"priority:high", "priority:low", "owner:ann", "owner:bob"} & sources
    kinds = {k for (k,) in con.execute("SELECT DISTINCT kind FROM events")}
    assert {"submitted", "running", "done"} <= kinds


def test_history_is_read_back_in_another_process_after_the_cluster_closed(tmp_path):
    store = str(tmp_path / "t.db")
    with launch(store=store) as pc:
        pc.client.gather(pc.client.map(sleep_then, range(6)))
        time.sleep(0.3)
    code = ("import json, sys, packlab; m = packlab.monitor(sys.argv[1]); s = m.snapshot(); "
            "ds = m.history('memory'); d = m.history('job_duration'); "
            "print(json.dumps({'jobs': s.jobs, 'workers': s.workers, 'sources': len(ds.source), "
            "'times': len(ds.time), 'units': ds['memory'].attrs['units'], 'durations': int(d.sizes['job']), "
            "'findings': [f.name for f in packlab.advise(sys.argv[1])]}))")
    out = subprocess.run([sys.executable, "-c", code, store], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["jobs"] == 6 and got["workers"] == 0 and got["sources"] == 2 and got["times"] >= 2
    assert got["units"] == "bytes" and got["durations"] == 6
    assert "too-small-for-a-cluster" in got["findings"]


def test_cost_matches_the_attribution_of_the_stored_intervals(tmp_path):
    store = str(tmp_path / "t.db")
    with launch(store=store) as pc:
        pc.client.gather(pc.client.map(sleep_then, range(8), s=0.05))
    pricing = Pricing(core_hour=3.6, gb_hour=1.8)  # a 1-core 1-GiB worker: 0.0015 per second
    snap = packlab.monitor(store, pricing=pricing).snapshot()
    con = sqlite3.connect(store)
    held = [dict(worker=w, start=a, stop=b, cores=1, memory=2**30) for w, a, b in
            con.execute("SELECT worker, start, COALESCE(stop, seen) FROM tel_workers")]
    busy = [dict(job=k, worker=w, start=a, stop=b) for k, w, a, b in
            con.execute("SELECT key, worker, start, stop FROM tel_tasks")]
    r = cost.attribute(pricing, held, busy)
    hand = sum((h["stop"] - h["start"]) * 0.0015 for h in held)
    hand_busy = sum((b["stop"] - b["start"]) * 0.0015 for b in busy)  # each task: its time x the rate
    assert math.isclose(r.total, hand, rel_tol=1e-6) and math.isclose(snap.cost_total, hand, rel_tol=1e-6)
    assert math.isclose(snap.cost_idle, hand - hand_busy, rel_tol=1e-6)
    assert math.isclose(snap.cost_per_job, hand_busy / 8, rel_tol=1e-6)
    # attribute() shares a worker between tasks whose stamps overlap (a worker's clock, not
    # its thread pool): it can charge a little less than their summed time, never more
    assert r.idle >= snap.cost_idle - 1e-9 and math.isclose(r.idle, snap.cost_idle, rel_tol=0.05)


# -- the advisor over real anti-patterns ---------------------------------------------------
def test_a_single_task_holding_most_of_the_run_is_a_giant_job(tmp_path):
    with launch() as pc:
        small = pc.client.map(sleep_then, range(20), s=0.01)
        giant = pc.client.submit(sleep_then, "giant", 1.5)
        pc.client.gather([*small, giant])
        found = {f.name: f for f in packlab.advise(pc)}
    f = found["single-giant-job"]
    assert f.evidence["share"] >= 0.5 and f.evidence["longest_task_seconds"] >= 1.5
    assert "sleep_then" in f.message


def hold_memory(nbytes, seconds):
    block = bytearray(nbytes)
    time.sleep(seconds)
    return len(block)


def test_a_worker_given_four_times_the_memory_it_uses_is_a_memory_hog():
    with launch(workers=1, memory="1GiB") as pc:  # it uses ~250 MiB: a quarter
        assert pc.client.submit(hold_memory, 160 * 2**20, 1.0).result() == 160 * 2**20
        time.sleep(0.3)
        found = {f.name: f for f in packlab.advise(packlab.monitor(pc))}
    f = found["memory-hog"]
    assert f.evidence["memory_gib"] == 1.0 and 0.1 < f.evidence["memory_fraction"] < 0.5
    assert f.fix.startswith("packlab.launch(")


def fail_fast(x):
    raise RuntimeError(f"always fails: {x}")


def test_a_function_failing_fast_in_a_retry_loop_is_a_retry_storm(tmp_path):
    with launch(workers=1) as pc:
        with packlab.JobQueue(pc, store=str(tmp_path / "q.db"), breaker=CircuitBreaker(threshold=100),
                              retry=packlab.Retry(attempts=6, backoff="constant", base=0, jitter=False)) as q:
            job = q.submit(fail_fast, 1)
            q.wait([job], timeout=60)
            time.sleep(0.3)
            m = packlab.monitor(pc)
            found = {f.name: f for f in packlab.advise(m)}
            snap = m.snapshot()
            m.add_sink(CallbackSink(print), every=60)
            after = names(packlab.advise(m))
            m.close()
    f = found["retry-storm"]
    assert f.severity == "critical" and f.evidence["retries_without_backoff"] >= 3
    assert f.evidence["retries"] >= 3 and f.evidence["submissions"] == 1
    assert snap.failure_rate == 1.0 and snap.jobs_failed == 1
    assert "unmonitored-pipeline" in found  # a queue ran with no alert sink
    assert "unmonitored-pipeline" not in after and "retry-storm" in after


def test_workers_held_and_idle_are_an_idle_cluster_and_a_tiny_job_is_too_small():
    with dask.config.set({"packlab.telemetry.advisor.idle-after": "1s"}), launch(workers=3) as pc:
        assert pc.client.submit(sum, [1, 2]).result() == 3
        time.sleep(1.5)
        found = {f.name: f for f in packlab.advise(pc)}
    idle = found["idle-cluster"].evidence
    assert idle["workers"] == 3 and idle["idle_seconds"] >= 1
    assert found["idle-cluster"].fix == "cluster.adapt(minimum=0, maximum=3)"
    assert found["too-small-for-a-cluster"].evidence["task_seconds"] < 1


def test_alerts_from_the_monitor_reach_a_sink():
    got = []
    with launch(workers=1) as pc:
        m = packlab.monitor(pc)
        m.add_sink(CallbackSink(got.append), every=60)
        time.sleep(0.6)  # an idle worker: utilisation 0 over the whole window
        rule = packlab.telemetry.alerts.Rule("idle", "utilisation", "below_for", 0.5, window=0.3, cooldown=0,
                                             min_samples=2)
        alerts = m.check_alerts([rule])
        m.close()
    assert [(a.rule, a.status) for a in alerts] == [("idle", "firing")] and got == alerts


def test_packlab_gauges_are_on_the_schedulers_own_metrics_endpoint(tmp_path):
    pytest.importorskip("prometheus_client")
    import urllib.request

    with launch(workers=1, security=False) as pc:
        with packlab.JobQueue(pc, store=str(tmp_path / "q.db")) as q:
            q.wait([q.submit(sleep_then, 1)], timeout=60)
            url = pc.dashboard_link.replace("/status", "/metrics")
            with urllib.request.urlopen(url, timeout=30) as r:
                text = r.read().decode()
    for name in ("packlab_workers", "packlab_utilisation", "packlab_task_failure_rate", "packlab_cost_rate",
                 "packlab_queue_depth"):
        assert name in text, name
    assert "dask_scheduler_workers" in text  # the same endpoint as Dask's own metrics


def nvml_of_an_idle_gpu(worker):
    """What distributed's NVML metric puts in a worker's heartbeat where pynvml is
    installed (``distributed.diagnostics.nvml.real_time``): this machine has no GPU, so a
    worker reports it through Dask's own custom-metric hook, on the same path."""
    return {"utilization": 7, "memory-used": 2**30}


def test_gpu_use_from_dasks_heartbeat_metric_reaches_history_panel_and_advisor(tmp_path):
    from packlab.ui.feed import Feed

    store = str(tmp_path / "gpu.db")
    with launch(workers=1, memory="1GiB", store=store, metrics={"gpu": nvml_of_an_idle_gpu}) as pc:
        assert pc.client.gather(pc.client.map(abs, range(-3, 3))) == [3, 2, 1, 0, 1, 2]
        m = packlab.monitor(pc)
        deadline = time.monotonic() + 30
        while m.history("gpu").sizes["time"] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        gpu, mem = m.history("gpu"), m.history("gpu_memory")
        assert gpu.sizes["time"] >= 2 and float(gpu["gpu"].values[-1, 0]) == pytest.approx(0.07)
        assert gpu["gpu"].attrs["units"] == "fraction" and float(mem["gpu_memory"].values[-1, 0]) == 2**30
        (idle,) = [f for f in packlab.advise(m) if f.name == "idle-gpus"]  # 7 % is under 15 %
        assert idle.evidence["gpu_utilisation"] == pytest.approx(0.07)
        t, v = Feed(store).read().utilisation["GPU"]
        assert len(t) >= 1 and v[-1] == pytest.approx(7.0)


def test_the_recorded_depth_is_the_queues_own_while_nothing_runs(tmp_path):
    """No worker: the queue hands a few jobs to Dask and the rest wait, with no event to
    say so after the last one; the depth recorded is what the queue holds, not the figure
    the last event carried (jobs enter the queue after their record commits, silently)."""
    qstore = str(tmp_path / "q.db")
    with launch(workers=0) as pc:
        with packlab.JobQueue(pc, store=qstore, policy="priority") as q:
            q.map(abs, range(-10, 0), priority="high", owner="ann")
            q.map(abs, range(-20, 0), priority="low")
            q.flush()
            deadline = time.monotonic() + 30
            while q.stats()["in_flight"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # a few samples, flushed
            stats = q.stats()
            con = sqlite3.connect(qstore)
            depth = {s: v for s, v in con.execute(
                "SELECT source, value FROM tel_samples WHERE metric='queue_depth' AND "
                "t = (SELECT MAX(t) FROM tel_samples WHERE metric='queue_depth')")}
    assert stats["in_flight"] > 0 and stats["queued"] == 30 - stats["in_flight"]
    assert depth[""] == stats["queued"] == packlab.monitor(qstore).snapshot().queue_depth
    assert depth["priority:high"] + depth["priority:low"] == stats["queued"]
    assert depth["priority:low"] == 20  # the high class went first
    assert depth.get("owner:ann", 0) == 10 - stats["in_flight"]
