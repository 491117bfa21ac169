"""The panel's view model: pure functions from a snapshot, history and findings to plot data."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import xarray as xr

from packlab.telemetry.advisor import Finding
from packlab.telemetry.alerts import Alert
from packlab.telemetry.monitor import Snapshot
from packlab.ui import viewmodel as vm


def _snap(**kw):
    base = dict(at=0, queue_depth=3, utilisation=0.5, duration_p50=1.0, duration_p95=2.0, failure_rate=0.2,
                cost_per_job=0.02, currency="EUR", cost_total=1.0, cost_idle=0.6, idle_share=0.6, jobs=10,
                jobs_failed=2, jobs_completed_today=8, workers=2, duration_trend="flat", duration_change=0.0,
                cost_trend="Cost trend flat", cost_change=0.0)
    return Snapshot(**{**base, **kw})


def test_bucket_keeps_at_most_points_and_each_kind_of_aggregate():
    t = np.arange(1000.0)
    v = np.sin(t)
    for how in ("mean", "max", "last"):
        bt, _ = vm.bucket(t, v, 50, how)
        assert len(bt) <= 50 and np.all(np.diff(bt) > 0)
    assert vm.bucket(t, v, 50, "max")[1].max() == v.max()
    assert vm.bucket([0, 1], [np.nan, 2], 10) == (np.array([1.0]), np.array([2.0]))


def test_history_columns_by_source_and_totals():
    times = (np.array([1, 2, 3]) * 1e9).astype("datetime64[ns]")
    data = np.array([[1.0, np.nan, 5.0], [2.0, 3.0, 5.0], [np.nan, 4.0, 5.0]])
    ds = xr.Dataset({"queue_depth": (("time", "source"), data)},
                    coords={"time": times, "source": ["priority:high", "priority:low", ""]})
    lines = vm.by_source(ds, "queue_depth", prefix="priority:")
    assert set(lines) == {"high", "low"}
    assert lines["low"][0].tolist() == [2.0, 3.0] and lines["low"][1].tolist() == [3.0, 4.0]
    _, total = vm.total(ds, "queue_depth")  # the workers' sum leaves the cluster's own column out
    assert total.tolist() == [1.0, 5.0, 4.0]
    assert vm.latest(ds, "queue_depth")["priority:high"] == (2.0, 2.0)


def test_cards_colour_by_state_and_active_alerts():
    cs = {c.label: c for c in vm.cards(_snap(), healthy="1/2 healthy", sla=1.0, failure_limit=0.1,
                                       cost_rate=0.5, spot_savings=0.25,
                                       active={"failure-rate", "queue-depth-growing"})}
    assert cs["Failure rate"].colour == vm.BAD and cs["Failure rate"].value == "20.0 %"
    assert cs["Queue depth"].colour == vm.WARN and cs["Queue depth"].note == "growing"
    assert cs["Workers"].colour == vm.WARN  # not all healthy
    assert cs["Duration p50 / p95"].colour == vm.WARN  # p95 above 80 % of the SLA
    assert cs["Cost so far"].note == "0.5000 EUR/h now"
    assert cs["Spot savings"].value == "0.2500 EUR"
    assert cs["Idle share"].colour == vm.WARN
    quiet = {c.label: c for c in vm.cards(_snap(jobs=0, jobs_failed=0, failure_rate=0.0, cost_total=0.0),
                                          healthy="2/2 healthy", sla=None, failure_limit=0.1, cost_rate=None,
                                          spot_savings=None)}
    assert quiet["Failure rate"].colour == vm.NONE and quiet["Workers"].colour == vm.OK
    assert quiet["Cost so far"].note == "no prices set (packlab.pricing)"


def test_findings_and_alerts_are_escaped_with_their_fix():
    f = Finding("memory-hog", "warning", {"peak": 1.0}, "launch(memory='<2GiB>')", "peak <b>low</b>")
    a = Alert("failure-rate", "firing", "job_failed", 0.5, 0.1, "critical", 0, "fails <script>")
    page = vm.findings_html([a], [f])
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "launch(memory=&#x27;&lt;2GiB&gt;&#x27;)" in page and "CRITICAL" in page
    assert "no alert firing" in vm.findings_html([], [])


def test_workers_health_from_resources_and_latest_samples():
    info = [NS(worker="a", name="0", threads=2, memory_limit=100, stopped=None),
            NS(worker="b", name="1", threads=1, memory_limit=100, stopped=None),
            NS(worker="c", name="2", threads=1, memory_limit=100, stopped=5.0)]
    cpu = {"a": (100.0, 1.0), "b": (100.0, 1.0), "c": (5.0, 0.0)}
    mem = {"a": (100.0, 50.0), "b": (100.0, 97.0), "c": (5.0, 10.0)}
    ws = vm.workers(info, cpu, mem, now=101.0)
    assert [(w.colour, w.state) for w in ws] == [(vm.OK, "ok"), (vm.BAD, "memory 97 %"), (vm.NONE, "stopped")]
    assert ws[0].cpu == 50.0 and vm.health_label(w.colour for w in ws) == "1/2 healthy"
    late = vm.workers(info[:1], cpu, mem, now=100.0 + 60, interval=1.0)
    assert late[0].state == "not answering" and late[0].colour == vm.BAD
