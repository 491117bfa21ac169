"""Pipelines on a real LocalCluster, a real SQLite queue store and real checkpoint files:
fan-out, resume without recomputing, cache invalidation, torn and foreign checkpoints,
graceful degradation, retries, timeouts and in-stage state surviving a SIGKILLed worker."""

from __future__ import annotations

import json
import os
import signal
import stat
import warnings

import pytest
from support import TESTS, small_cluster

import packlab
from packlab.pipeline import PipelineWarning
from packlab.queue import Retry

QUICK = Retry(attempts=3, base=0.05, cap=0.1, jitter=False)


@pytest.fixture(scope="module")
def cluster():
    with small_cluster() as pc:
        yield pc


def counted(log, name):
    """Record one execution of ``name`` (a side effect that a rerun would repeat)."""
    with open(log, "a") as f:
        f.write(name + "\n")


def runs_of(log):
    if not os.path.exists(log):
        return {}
    out = {}
    for line in open(log).read().split():
        out[line] = out.get(line, 0) + 1
    return out


def etl(ckpt, log, scale=2):
    pipe = packlab.Pipeline("etl", checkpoint=ckpt)

    @pipe.stage
    def load():
        counted(log, "load")
        return [1, 2, 3, 4]

    @pipe.stage(map_over="load", retry=QUICK)
    def transform(load, factor=scale):
        counted(log, "transform")
        return load * factor

    @pipe.stage(priority="high")
    def total(transform):
        counted(log, "total")
        return sum(transform)

    @pipe.stage(depends_on="total")
    def report(load, total):
        counted(log, "report")
        return f"{len(load)} rows, total {total}"

    return pipe


def test_fan_out_results_statuses_and_jobs_named_after_the_pipeline(cluster, tmp_path):
    log = tmp_path / "log"
    pipe = etl(str(tmp_path / "ckpt"), log)
    run = pipe.run(cluster)
    assert run.ok and run.failed == [] and run.skipped == []
    assert run["transform"].result == [2, 4, 6, 8] and run["transform"].units == 4
    assert run.results == {"load": [1, 2, 3, 4], "transform": [2, 4, 6, 8], "total": 20,
                           "report": "4 rows, total 20"}
    assert [run[s].status for s in pipe.stages] == ["done"] * 4
    assert all(run[s].attempts >= 1 and run[s].seconds >= 0 for s in pipe.stages)
    assert runs_of(log) == {"load": 1, "transform": 4, "total": 1, "report": 1}
    assert "computed" in run.report() and "transform" in run.report()
    # the stages ran as jobs of a queue whose store is in the checkpoint dir, named per stage
    root = tmp_path / "ckpt"
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    with packlab.JobQueue(cluster, store=str(root / "queue.db")) as q:
        jobs = [q.get(j) for s in pipe.stages for j in run[s].jobs]
        assert {j.fn_name for j in jobs} == {f"packlab.pipeline.etl.{s}" for s in pipe.stages}
        assert {packlab.pipeline.stage_of_job(j.fn_name) for j in jobs} == {("etl", s) for s in pipe.stages}
        assert {j.owner for j in jobs} == {"etl"}
        assert {j.priority for j in jobs if j.fn_name.endswith("total")} == {"high"}


def test_resume_reuses_every_checkpoint_and_changes_invalidate_downstream_only(cluster, tmp_path):
    log, ckpt = tmp_path / "log", str(tmp_path / "ckpt")
    first = etl(ckpt, log).run(cluster)
    again = etl(ckpt, log).run(cluster)  # a new Pipeline object: keys come from code, not identity
    assert again.cached == ["load", "transform", "total", "report"] and again.computed == []
    assert again.results == first.results
    assert runs_of(log) == {"load": 1, "transform": 4, "total": 1, "report": 1}
    assert again["transform"].attempts == 0 and again.rework_saved() >= 0
    closed = packlab.JobQueue(cluster, store=str(tmp_path / "other.db"))
    closed.close()
    assert etl(ckpt, log).run(closed).cached == again.cached  # nothing to run: no queue touched
    # a changed constant: transform and everything after it run again, load is reused
    changed = etl(ckpt, log, scale=3).run(cluster)
    assert changed.cached == ["load"] and changed.computed == ["transform", "total", "report"]
    assert changed["total"].result == 30
    # clean() drops what no current key uses: the scale=2 outputs of transform, total, report
    stale = etl(ckpt, log, scale=3).clean(dry_run=True)
    assert stale and all("/load/" not in p for p in stale)
    assert {os.path.basename(os.path.dirname(p)) for p in stale} == {"transform", "total", "report"}
    assert etl(ckpt, log, scale=3).clean() == stale and etl(ckpt, log, scale=3).clean() == []
    assert etl(ckpt, log, scale=3).run(cluster).computed == []
    # resume=False recomputes all
    fresh = etl(ckpt, log).run(cluster, resume=False)
    assert fresh.computed == ["load", "transform", "total", "report"]
    assert runs_of(log)["load"] == 2


def test_changed_code_of_a_stage_reruns_it_and_what_follows(cluster, tmp_path):
    ckpt = str(tmp_path / "ckpt")

    def build(offset_code):
        pipe = packlab.Pipeline("code", checkpoint=ckpt)

        @pipe.stage
        def a():
            return 1

        if offset_code:
            @pipe.stage
            def b(a):
                return a + 100
        else:
            @pipe.stage
            def b(a):
                return a + 1

        @pipe.stage
        def c(b):
            return b * 2

        return pipe

    assert build(False).run(cluster)["c"].result == 4
    run = build(True).run(cluster)
    assert run.cached == ["a"] and run.computed == ["b", "c"] and run["c"].result == 202


def _corrupt_then_rerun(cluster, tmp_path, damage):
    log, ckpt = tmp_path / "log", str(tmp_path / "ckpt")
    pipe = etl(ckpt, log)
    first = pipe.run(cluster)
    damage(tmp_path / "ckpt" / "outputs", first)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run = etl(ckpt, log).run(cluster)
    assert run.results == first.results
    assert any(issubclass(w.category, PipelineWarning) for w in seen), [str(w.message) for w in seen]
    return run


def test_truncated_checkpoint_is_detected_reported_and_recomputed(cluster, tmp_path):
    def truncate(out, first):
        p = out / "total" / first["total"].key / "data.pkl"
        p.write_bytes(p.read_bytes()[:3])

    run = _corrupt_then_rerun(cluster, tmp_path, truncate)
    assert "total" in run.computed and "truncated" in run["total"].invalid[0]
    assert run.cached == ["load", "transform", "report"]  # report's key did not change
    assert "checkpoint recomputed" in run.report()


def test_garbage_in_a_checkpoint_fails_its_checksum(cluster, tmp_path):
    def garble(out, first):
        p = out / "load" / first["load"].key / "data.pkl"
        p.write_bytes(b"\x00" * len(p.read_bytes()))

    run = _corrupt_then_rerun(cluster, tmp_path, garble)
    assert run.computed == ["load"] and "checksum" in run["load"].invalid[0]


def test_a_missing_fan_out_element_reruns_that_element_only(cluster, tmp_path):
    def remove(out, first):
        d = out / "transform" / f"{first['transform'].key}-2"
        for p in d.iterdir():
            p.unlink()
        d.rmdir()

    run = _corrupt_then_rerun(cluster, tmp_path, remove)
    assert run["transform"].status == "done" and run["transform"].units_cached == 3
    assert len(run["transform"].invalid) == 1 and "missing" in run["transform"].invalid[0]
    assert runs_of(tmp_path / "log")["transform"] == 5


def test_foreign_and_partial_checkpoints_are_never_used(cluster, tmp_path):
    def foreign(out, first):
        m = out / "report" / first["report"].key / "manifest.json"
        doc = json.loads(m.read_text())
        doc["pipeline"] = "someone-else"
        m.write_text(json.dumps(doc))
        (out / "total" / first["total"].key / "manifest.json").unlink()  # a torn write's leftover

    run = _corrupt_then_rerun(cluster, tmp_path, foreign)
    assert "foreign" in run["report"].invalid[0] and "no manifest" in run["total"].invalid[0]
    assert set(run.computed) == {"total", "report"}


def test_zarr_checkpoint_of_xarray_with_a_deleted_chunk_is_recomputed(cluster, tmp_path):
    pytest.importorskip("zarr")
    xr = pytest.importorskip("xarray")
    import dask.array as da
    import numpy as np

    log, ckpt = tmp_path / "log", str(tmp_path / "ckpt")

    def build():
        pipe = packlab.Pipeline("arrays", checkpoint=ckpt)

        @pipe.stage
        def field():
            counted(log, "field")
            return xr.Dataset({"t": (("x", "y"), da.arange(64.0, chunks=16).reshape(8, 8))})

        @pipe.stage
        def mean(field):
            return float(field.t.mean())

        return pipe

    first = build().run(cluster)
    ds = first["field"].result
    assert isinstance(ds, xr.Dataset) and ds.t.chunks is not None  # read back lazily
    np.testing.assert_array_equal(ds.t.values, np.arange(64.0).reshape(8, 8))
    assert first["mean"].result == 31.5
    meta = {"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"}  # zarr 3 and 2 layouts
    chunks = [p for p in (tmp_path / "ckpt" / "outputs" / "field").rglob("*")
              if p.is_file() and p.name not in meta and "t" in p.parts]
    assert chunks, "zarr wrote no chunk files"
    chunks[0].unlink()  # zarr alone would read this chunk back as the fill value
    with pytest.warns(PipelineWarning, match="missing"):
        run = build().run(cluster)
    assert run.computed == ["field"] and run.cached == ["mean"]
    np.testing.assert_array_equal(run["field"].result.t.values, np.arange(64.0).reshape(8, 8))
    assert runs_of(log)["field"] == 2


def test_failed_stage_skips_its_descendants_and_the_other_branch_finishes(cluster, tmp_path):
    pipe = packlab.Pipeline("branches", checkpoint=str(tmp_path / "ckpt"))

    @pipe.stage
    def source():
        return 10

    @pipe.stage(retry=False)
    def broken(source):
        raise RuntimeError("bad row 7")

    @pipe.stage
    def after_broken(broken):
        return broken

    @pipe.stage(timeout=0.5, retry=False)
    def slow(source):
        import time

        time.sleep(3)
        return 0

    @pipe.stage
    def fine(source):
        return source + 1

    @pipe.stage
    def joined(fine, after_broken):
        return fine

    run = pipe.run(cluster)
    assert run.failed == ["broken", "slow"] and run.skipped == ["after_broken", "joined"]
    assert run.results == {"source": 10, "fine": 11}
    assert "bad row 7" in run["broken"].error and run["joined"].skipped_because == "broken"
    assert "Timeout" in run["slow"].error or "timeout" in run["slow"].error
    assert not run.ok and "skipped: broken failed" in run.report()
    with pytest.raises(packlab.PacklabError, match=r"broken.*failed"):
        _ = run["broken"].result


def test_flaky_stage_succeeds_on_retry(cluster, tmp_path):
    marker = tmp_path / "flaked"
    pipe = packlab.Pipeline("flaky", checkpoint=str(tmp_path / "ckpt"), retry=QUICK)

    @pipe.stage
    def flaky():
        if not marker.exists():
            marker.touch()
            raise ConnectionError("transient")
        return "ok"

    run = pipe.run(cluster)
    assert run["flaky"].result == "ok" and run["flaky"].attempts == 2


def test_unserialisable_output_fails_naming_stage_and_type_without_retrying(cluster, tmp_path):
    pipe = packlab.Pipeline("unpicklable", checkpoint=str(tmp_path / "ckpt"), retry=QUICK)

    @pipe.stage
    def lock():
        import threading

        return threading.Lock()

    run = pipe.run(cluster)
    assert run.failed == ["lock"] and run["lock"].attempts == 1
    assert "stage 'lock' returned a _thread.lock" in run["lock"].error


def test_map_over_a_result_that_is_not_iterable_fails_that_stage(cluster, tmp_path):
    pipe = packlab.Pipeline("notiter", checkpoint=str(tmp_path / "ckpt"))

    @pipe.stage
    def n():
        return 5

    @pipe.stage(map_over="n")
    def each(n):
        return n

    run = pipe.run(cluster)
    assert run.failed == ["each"]
    assert "builtins.int from stage 'n', which is not iterable" in run["each"].error


def test_stage_resumes_from_its_saved_state_after_its_worker_is_sigkilled(cluster, tmp_path):
    log, marker = tmp_path / "steps", tmp_path / "killed"
    pipe = packlab.Pipeline("longjob", checkpoint=str(tmp_path / "ckpt"))

    @pipe.stage
    def train(ctx, steps=10):
        state = ctx.load({"step": 0, "total": 0})
        for i in range(state["step"], steps):
            counted(log, f"step{i}")
            state = {"step": i + 1, "total": state["total"] + i}
            ctx.save(state)
            if i == 6 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-stage
        return state["total"]

    run = pipe.run(cluster)
    assert run["train"].result == sum(range(10)) and run["train"].resumed == 1
    steps = runs_of(log)
    assert sum(steps.values()) == 10 and set(steps.values()) == {1}  # no step ran twice
    assert not list((tmp_path / "ckpt" / "ctx").rglob("*.pkl"))  # the state went with success


def test_a_given_queue_runs_the_stages_and_stays_open(cluster, tmp_path):
    pipe = packlab.Pipeline("onqueue", checkpoint=str(tmp_path / "ckpt"))

    @pipe.stage(resources=None)
    def one():
        return 1

    @pipe.stage(map_over="files")  # fan-out over a constant list
    def each(one, files=("a", "b", "c")):
        return f"{files}{one}"

    with packlab.JobQueue(cluster, store=str(tmp_path / "q.db")) as q:
        run = pipe.run(q)
        assert run["one"].result == 1 and q.get(run["one"].jobs[0]).status == "done"
        assert run["each"].result == ["a1", "b1", "c1"] and len(run["each"].jobs) == 3


def test_visualize_draws_states_as_bokeh_and_svg(cluster, tmp_path):
    pipe = etl(str(tmp_path / "ckpt"), tmp_path / "log")
    fig = pipe.visualize()
    assert type(fig).__name__ == "figure"
    pipe.run(cluster)
    svg = tmp_path / "dag.svg"
    pipe.visualize(filename=str(svg))
    text = svg.read_text()
    assert text.startswith("<svg") and "transform: done" in text and text.count("<rect") == 4
    pipe.visualize(filename=str(tmp_path / "dag.html"))
    assert "Bokeh" in (tmp_path / "dag.html").read_text()
    with pytest.raises(packlab.PacklabError, match="PNG export needs a browser"):
        pipe.visualize(filename=str(tmp_path / "dag.png"))


def test_driver_sigkilled_mid_pipeline_resumes_without_redoing_finished_work(tmp_path):
    import subprocess
    import sys
    import time

    from packlab.pipeline import CheckpointStore

    driver = os.path.join(TESTS, "pipeline_driver.py")
    ckpt, log = str(tmp_path / "ckpt"), str(tmp_path / "log")
    p = subprocess.Popen([sys.executable, driver, ckpt, log], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "started"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120 and sum(k.startswith("square") for k in runs_of(log)) < 3:
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGKILL)  # the driver and its cluster's workers, mid fan-out
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    store = CheckpointStore(ckpt, "crash")
    out = tmp_path / "ckpt" / "outputs"
    finished = [d.name for d in (out / "square").iterdir() if store.check("square", d.name) is None]
    assert 2 <= len(finished) < 8 and not (out / "total").exists()
    before = runs_of(log)
    rerun = subprocess.run([sys.executable, driver, ckpt, log], capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    final = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert final["results"] == {"source": list(range(8)), "square": [i * i for i in range(8)],
                                "total": 140, "summary": {"n": 8, "total": 140}}
    assert final["cached"] == ["source"] and final["computed"] == ["square", "total", "summary"]
    after = runs_of(log)
    assert after["source"] == 1 and after["total"] == 1 and after["summary"] == 1
    done_elements = {f"square-{int(name.rsplit('-', 1)[1])}" for name in finished}
    for e in done_elements:
        assert after[e] == 1, (e, before, after)  # finished before the kill: not recomputed
    assert {f"square-{i}" for i in range(8)} <= set(after)


def test_a_unit_checkpointed_before_its_driver_died_ends_done_in_the_record(cluster, tmp_path):
    """Regression (found by tests/chaos): a driver SIGKILLed after a worker wrote a unit's
    checkpoint but before the unit's job was recorded done left that job "running" in
    queue.db for good: the re-run reused the checkpoint and never settled the job, so the
    record disagreed with the outputs and a later resume() of the store ran the unit again.
    Now the re-run takes the job over and it completes on the checkpoint, not run again."""
    import sqlite3

    from packlab.queue import JobQueue

    ckpt, log = str(tmp_path / "ckpt"), tmp_path / "log"
    store = os.path.join(ckpt, "queue.db")
    os.mkdir(ckpt, 0o700)
    os.close(os.open(store, os.O_CREAT | os.O_WRONLY, 0o600))  # a driver killed as it made its store
    assert etl(ckpt, log).run(cluster).ok
    con = sqlite3.connect(store)
    with con:  # the state such a kill leaves: checkpoints whole, their jobs still running
        crashed = [jid for (jid,) in con.execute("SELECT id FROM jobs WHERE key LIKE 'pipeline:etl:t%' "
                                                 "OR key LIKE 'pipeline:etl:report:%'")]
        con.executemany("UPDATE jobs SET status='running' WHERE id=?", [(j,) for j in crashed])
        con.executemany("DELETE FROM events WHERE job_id=? AND kind='done'", [(j,) for j in crashed])
    con.close()
    assert len(crashed) == 6  # total, report and the 4 transform elements
    run = etl(ckpt, log).run(cluster)
    assert run.ok and run["transform"].units_cached == 4 and run["load"].status == "cached"
    assert runs_of(log) == {"load": 1, "transform": 4, "total": 1, "report": 1}  # nothing ran again
    con = sqlite3.connect(store)
    rows = con.execute("SELECT status, (SELECT COUNT(*) FROM events e WHERE e.job_id = j.id AND "
                       "e.kind='done') FROM jobs j").fetchall()
    con.close()
    assert len(rows) == 7 and all(r == ("done", 1) for r in rows), rows  # done once, none unfinished
    with JobQueue(cluster, store=store).resume() as q:
        assert q.jobs() == []  # nothing left for a resume() to run again


def test_sigterm_before_a_kill_saves_the_running_stages_state(cluster, tmp_path):
    """What SLURM does at preemption and walltime (SIGTERM, then SIGKILL): the stage never
    calls ctx.save itself; its autosave getter's state is saved by the signal handler."""
    import threading
    import time

    log, pidfile = tmp_path / "steps", tmp_path / "pid"
    pipe = packlab.Pipeline("warned", checkpoint=str(tmp_path / "ckpt"))

    @pipe.stage
    def long(ctx, steps=30):
        import time as _time

        state = ctx.load({"step": 0})
        ctx.autosave(lambda: dict(state))
        if not pidfile.exists():
            pidfile.write_text(str(os.getpid()))
        while state["step"] < steps:
            _time.sleep(0.05)
            counted(log, f"{os.getpid()}:{state['step']}")
            state = {"step": state["step"] + 1}
        return {"resumed_at": ctx.load({"step": 0})["step"] if ctx.resumed else 0, "preempted": ctx.preempted}

    def warn_then_kill():
        while sum(runs_of(log).values()) < 10:
            time.sleep(0.02)
        os.kill(int(pidfile.read_text()), signal.SIGTERM)

    t = threading.Thread(target=warn_then_kill, daemon=True)
    t.start()
    run = pipe.run(cluster)
    t.join(timeout=10)
    out = run["long"].result
    assert run["long"].resumed == 1 and out["resumed_at"] >= 10 and out["preempted"] is False  # a new process
    steps = [int(k.split(":")[1]) for k in open(log).read().split()]
    assert sorted(set(steps)) == list(range(30)) and len(steps) - 30 <= 1  # at most the step in flight


def test_a_pipelines_stages_show_in_the_monitor_and_the_panel_by_name(tmp_path):
    """Its own cluster with telemetry: the pipeline's queue takes the cluster's telemetry
    over, so the monitor of the cluster (and of the store, afterwards) groups the stage
    jobs by pipeline and stage, a flaky fan-out element's retry included."""
    from packlab.ui import cards

    log = tmp_path / "log"
    flaky = tmp_path / "flaky-once"
    pipe = packlab.Pipeline("shop", checkpoint=str(tmp_path / "ckpt"))

    @pipe.stage
    def orders():
        return [3, 1, 2]

    @pipe.stage(map_over="orders", retry=QUICK)
    def price(orders):
        if orders == 1 and not os.path.exists(flaky):
            open(flaky, "w").close()
            raise ConnectionError("the price service blinked")
        counted(log, "price")
        return orders * 10

    @pipe.stage
    def invoice(price):
        return sum(price)

    with small_cluster() as pc:
        run = pipe.run(pc)
        assert run.ok and run["invoice"].result == 60
        m = packlab.monitor(pc)
        stages = {(s["pipeline"], s["stage"]): s for s in m.pipelines()}
    assert list(stages) == [("shop", "orders"), ("shop", "price"), ("shop", "invoice")]
    assert [stages["shop", s]["done"] for s in ("orders", "price", "invoice")] == [1, 3, 1]
    assert stages["shop", "price"]["retries"] == 1 and stages["shop", "price"]["failed"] == 0
    assert all(s["busy_s"] > 0 for s in stages.values())
    later = packlab.monitor(str(tmp_path / "ckpt" / "queue.db")).pipelines()  # the store, afterwards
    assert [(s["stage"], s["done"], s["retries"]) for s in later] == [
        ("orders", 1, 0), ("price", 3, 1), ("invoice", 1, 0)]
    html = cards.pipelines_html(later)
    assert html.count("<tr>") == 4 and "shop" in html and "invoice" in html
