"""Alerts are judged in one place: an AlertEvaluator holds the firing state that a
cluster's monitors and its panel share, so they never disagree about what fires and an
alert reaches the sinks once."""

from __future__ import annotations

import time

import dask

import packlab
from packlab.telemetry.alerts import AlertEvaluator, Rule
from packlab.telemetry.sinks import CallbackSink
from packlab.ui.feed import Feed


def test_callers_with_other_rules_keep_each_others_state():
    ev = AlertEvaluator()
    busy = Rule("busy", "utilisation", "above_for", 0.9, window=60, cooldown=0, min_samples=2)
    deep = Rule("deep", "queue_depth", "slope_above", 0.0, window=60, cooldown=0, min_samples=2)
    rows = {"utilisation": [(0, 0.95), (60, 0.99)], "queue_depth": [(30, 1), (60, 9)]}
    assert [a.rule for a in ev.check([busy], lambda w: rows, now=60)] == ["busy"]
    assert [a.rule for a in ev.check([deep], lambda w: rows, now=60)] == ["deep"]
    assert ev.check([busy, deep], lambda w: rows, now=60) == []  # both still hold: no repeat
    assert list(ev.firing) == ["busy", "deep"]
    got = []
    ev.sinks.append(CallbackSink(got.append))
    calm = {"utilisation": [(0, 0.1), (30, 0.1), (63, 0.1)]}
    assert [(a.rule, a.status) for a in ev.check([busy], lambda w: calm, now=63)] == [("busy", "resolved")]
    assert [(a.rule, a.status) for a in got] == [("busy", "resolved")] and list(ev.firing) == ["deep"]


def test_the_panel_and_the_monitor_share_one_evaluator_and_its_sinks(tmp_path):
    got = []
    idle = Rule("idle", "utilisation", "below_for", 0.5, window=0.3, cooldown=0, min_samples=2)
    fast = {"packlab.telemetry.interval": "0.1s", "packlab.telemetry.flush-interval": "0.1s"}
    with dask.config.set(fast), packlab.launch(workers=1, cores=1, memory="1GiB", wait=True,
                                               store=str(tmp_path / "t.db")) as pc:
        m = packlab.monitor(pc)
        m.add_sink(CallbackSink(got.append), every=600)
        feed = Feed(pc)
        assert feed.monitor.evaluator is m.evaluator is packlab.monitor(pc).evaluator
        feed.rules = [idle]
        time.sleep(0.6)  # an idle worker: utilisation 0 over the whole window
        alerts = m.check_alerts([idle])  # the monitor's check fires it ...
        assert [(a.rule, a.status) for a in alerts] == [("idle", "firing")] and got == alerts
        frame = feed.read()  # ... and the panel, judging the same rule, shows it firing, sent once
        assert [a.rule for a in frame.alerts] == ["idle"] and len(got) == 1
        assert list(m.evaluator.firing) == ["idle"]
        m.close()
    assert len(got) == 1
