"""Dask's spans and fine performance metrics attribute the time of queue jobs and tasks:
the store holds exactly what the scheduler's SpansSchedulerExtension reports, a CPU-bound
function shows a high CPU efficiency and a sleeping one a low one, per owner, function
and task prefix, and the advisor names the waiting function."""

from __future__ import annotations

import sqlite3
import time

import dask
import pytest
from test_telemetry_collect import FAST, launch

import packlab
from packlab.queue import spans
from packlab.telemetry import fine

BURN, NAP = 0.25, 0.3  # CPU seconds a burner uses, seconds a napper sleeps


@pytest.fixture(autouse=True)
def _fast_sampling():
    with dask.config.set(FAST):
        yield


def burn(x):
    t = time.thread_time()
    while time.thread_time() - t < BURN:
        pass
    return x


def nap(x):
    time.sleep(NAP)
    return x


def named(metrics: dict) -> dict:
    """Dask's metrics with the task prefixes as packlab names them (without the span's word)."""
    out: dict = {}
    for (context, prefix, activity, unit), v in metrics.items():
        k = (context, spans.task_name(prefix), activity, unit)
        out[k] = out.get(k, 0) + v
    return out


def dask_figures(dask_scheduler) -> dict:
    """What Dask itself says: per packlab span its cumulative metrics, and the totals."""
    ext = dask_scheduler.extensions["spans"]
    out = {}
    for sp in ext.spans.values():
        if spans.parse(sp.name) is not None:
            out[sp.name] = named({k: v for k, v in sp.cumulative_worker_metrics.items() if k[1] != "N/A"})
    out["total"] = named({k: v for k, v in dask_scheduler.cumulative_worker_metrics.items()
                          if isinstance(k, tuple) and len(k) == 4 and k[0] == "execute"})
    out["packlab spans"] = sum(1 for sp in ext.spans.values() if sp.name[0] == spans.ROOT)
    return out


def settled(pc) -> dict:
    """Dask's figures once the workers' heartbeats have delivered them all."""
    deadline, last = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        now = pc.client.run_on_scheduler(dask_figures)
        if now == last:
            return now
        last = now
        time.sleep(1.2)  # over two heartbeats of a small cluster
    raise AssertionError("Dask's fine metrics kept changing")


def by(rows, key) -> dict:
    return {r[key]: r for r in rows}


def test_cpu_bound_and_sleeping_work_give_dasks_own_high_and_low_cpu_efficiency(tmp_path):
    store = str(tmp_path / "q.db")
    with launch(store=store) as pc:
        assert pc.client.gather(pc.client.map(burn, range(2)) + pc.client.map(nap, range(2))) == [0, 1] * 2
        with packlab.JobQueue(pc, store=store) as q:
            jobs = ([q.submit(burn, i, owner="ann") for i in range(3)]
                    + [q.submit(nap, i, owner="ann") for i in range(2)]
                    + [q.submit(nap, i, owner="bob") for i in range(3)])
            q.wait(jobs, timeout=120)
            dask_says = settled(pc)
            m = packlab.monitor(pc)
            fns, owners, prefixes = (m.cpu_efficiency(b) for b in ("fn", "owner", "prefix"))
            findings = packlab.advise(m)
    # one span per owner and function (and their parents), however many hand-overs
    assert dask_says["packlab spans"] == 1 + 2 + 3
    con = sqlite3.connect(store)
    stored: dict = {}
    for owner, fn, prefix, activity, unit, value in con.execute(
            "SELECT owner, fn, prefix, activity, unit, value FROM tel_fine WHERE span != ''"):
        stored.setdefault(spans.span_name(owner, fn), {})[("execute", prefix, activity, unit)] = value
    total = {("execute", p, a, u): v for p, a, u, v in con.execute(
        "SELECT prefix, activity, unit, value FROM tel_fine WHERE span = ''")}
    assert stored == {k: v for k, v in dask_says.items() if isinstance(k, tuple)}  # exactly Dask's figures
    assert total == pytest.approx(dask_says["total"], rel=1e-12)

    name = f"{__name__}.{{}}"
    f = by(fns, "fn")
    assert set(f) == {name.format("burn"), name.format("nap")}
    hot, cold = f[name.format("burn")], f[name.format("nap")]
    assert hot["cpu_seconds"] >= 3 * BURN * 0.95  # the CPU it burnt, however loaded the machine
    assert cold["noncpu_seconds"] >= 5 * NAP * 0.95 and cold["cpu_efficiency"] < 0.05
    assert hot["cpu_efficiency"] > 10 * cold["cpu_efficiency"]
    # the same function of two owners stays apart (a TaskGroup each)
    ann_nap = stored[spans.span_name("ann", name.format("nap"))]
    bob_nap = stored[spans.span_name("bob", name.format("nap"))]
    assert sum(v for k, v in ann_nap.items() if k[2] == "thread-noncpu") >= 2 * NAP * 0.95
    assert sum(v for k, v in bob_nap.items() if k[2] == "thread-noncpu") >= 3 * NAP * 0.95
    o = by(owners, "owner")
    assert set(o) == {"ann", "bob"} and o["bob"]["cpu_efficiency"] < 0.05
    assert o["ann"]["cpu_efficiency"] > o["bob"]["cpu_efficiency"]
    # plain Dask tasks too, per task prefix, from the scheduler's totals
    p = by(prefixes, "prefix")
    assert "burn-packlab" in p and all(spans.task_name(k) == k for k in p)  # queue tasks by their name
    assert p["burn"]["cpu_efficiency"] > 10 * p["nap"]["cpu_efficiency"]
    assert p["burn"]["cpu_seconds"] >= 2 * BURN * 0.95
    # the advisor names the waiting function, from Dask's figures
    low = [x for x in findings if x.name == "low-cpu-efficiency"]
    assert low and low[0].evidence["function_cpu_efficiency"] < 0.65  # a burner may share a loaded core
    assert name.format("nap") in low[0].message
    # a store read after the cluster closed gives the same figures
    assert packlab.monitor(store).cpu_efficiency("fn") == fns


def test_a_span_per_owner_and_function_is_stable_and_keys_keep_their_task_name():
    a = spans.annotation(spans.span_name("ann", "m.f"))
    assert a["ids"] == spans.annotation(("packlab", "owner:ann", "fn:m.f"))["ids"]
    assert a["ids"] != spans.annotation(spans.span_name("bob", "m.f"))["ids"]
    from dask.utils import key_split

    from packlab.telemetry.plugin import JOB_KEY, _prefix

    key = f"f-{spans.group_word(spans.span_name('ann', 'm.f'))}-packlab-0123456789ab-1.1-deadbeef"
    assert key_split(key) != "f-packlab" and _prefix(key) == "f-packlab"  # a group per span, same name
    assert fine.rows("c", 1.0, [("", None, None, {("f-qkzt-packlab", "thread-cpu", "seconds"): 1.0,
                                                  ("f-hhhh-packlab", "thread-cpu", "seconds"): 2.0})]) == [
        ("c", "", None, None, "f-packlab", "thread-cpu", "seconds", 3.0, 1.0)]  # added up, not overwritten
    assert JOB_KEY.search(key).group(1) == "0123456789ab"


def test_cpu_efficiency_refuses_an_unknown_grouping_and_an_old_store_has_none(tmp_path):
    con = sqlite3.connect(":memory:")
    assert fine.efficiency(con, "1=1", (), "fn") == []
    with pytest.raises(packlab.PacklabError, match="by="):
        fine.efficiency(con, "1=1", (), "worker")
