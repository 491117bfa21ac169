"""Alert rules as sequences of evaluate() calls, and the sinks against real receivers.

The webhook is tested against a real ``http.server`` on 127.0.0.1 in a thread, a closed
port, and a listening socket that never answers: the last two are reported, not raised.
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading

import dask
import pytest

from packlab.errors import PacklabError
from packlab.telemetry.alerts import Alert, Rule, RuleState, default_rules, evaluate
from packlab.telemetry.sinks import CallbackSink, Delivery, LogSink, NotebookSink, WebhookSink, deliver


def by_name(name):
    (rule,) = [r for r in default_rules() if r.name == name]
    return rule


def statuses(alerts):
    return [(a.rule, a.status) for a in alerts]


# -- the default rules: each fires on its pattern and not on its opposite ---------------
def test_queue_depth_growing_fires_on_a_positive_slope_only():
    rule = by_name("queue-depth-growing")  # window 5 min
    growing = [(t, t / 10) for t in range(0, 301, 10)]  # +0.1 job per second
    alerts, _ = evaluate([rule], {"queue_depth": growing}, now=300)
    assert statuses(alerts) == [("queue-depth-growing", "firing")]
    assert alerts[0].value == pytest.approx(0.1)
    draining = [(t, 30 - t / 10) for t in range(0, 301, 10)]
    assert evaluate([rule], {"queue_depth": draining}, now=300)[0] == []
    flat = [(t, 7) for t in range(0, 301, 10)]
    assert evaluate([rule], {"queue_depth": flat}, now=300)[0] == []


def test_utilisation_low_and_high_need_the_whole_window():
    low, high = by_name("utilisation-low"), by_name("utilisation-high")  # 0.5 and 0.9, 5 min
    idle = [(t, 0.2) for t in range(0, 301, 30)]
    alerts, _ = evaluate([low, high], {"utilisation": idle}, now=300)
    assert statuses(alerts) == [("utilisation-low", "firing")]
    busy = [(t, 0.95) for t in range(0, 301, 30)]
    alerts, _ = evaluate([low, high], {"utilisation": busy}, now=300)
    assert statuses(alerts) == [("utilisation-high", "firing")]
    # one sample back in range breaks "sustained"
    dip = [*busy[:-1], (300, 0.7)]
    assert evaluate([low, high], {"utilisation": dip}, now=300)[0] == []
    # two minutes of history do not cover a five-minute window: not judged yet
    short = [(t, 0.95) for t in range(180, 301, 30)]
    alerts, state = evaluate([high], {"utilisation": short}, now=300)
    assert alerts == [] and state["utilisation-high"] == RuleState()


def test_job_duration_p95_over_the_sla():
    rule = by_name("job-duration-sla")  # 1 h
    # 20 jobs of 10 min and 2 of 2 h in the window: p95 of 22 values is above 1 h
    rows = [(i * 10, 600) for i in range(20)] + [(250, 7200), (260, 7200)]
    alerts, _ = evaluate([rule], {"job_duration": rows}, now=300)
    assert statuses(alerts) == [("job-duration-sla", "firing")]
    quick = [(i * 10, 600) for i in range(20)] + [(250, 7200)]  # 1 slow job in 21: p95 = 600 s
    assert evaluate([rule], {"job_duration": quick}, now=300)[0] == []


def test_failure_rate_over_the_threshold():
    rule = by_name("failure-rate")  # 0.1
    rows = [(t, 1 if t % 50 == 0 else 0) for t in range(0, 300, 10)]  # 6 of 30 failed: 0.2
    alerts, _ = evaluate([rule], {"job_failed": rows}, now=300)
    assert statuses(alerts) == [("failure-rate", "firing")] and alerts[0].severity == "critical"
    assert alerts[0].value == pytest.approx(0.2)
    rows = [(t, 1 if t == 0 else 0) for t in range(0, 300, 10)]  # 1 of 30
    assert evaluate([rule], {"job_failed": rows}, now=300)[0] == []


def test_cost_per_job_trending_up_window_on_window():
    rule = by_name("cost-per-job-up")  # up 15 %, window 5 min
    before = [(t, 1.0) for t in range(10, 300, 30)]
    after = [(t, 1.2) for t in range(310, 600, 30)]  # +20 %
    alerts, _ = evaluate([rule], {"cost_per_job": before + after}, now=600)
    assert statuses(alerts) == [("cost-per-job-up", "firing")]
    assert alerts[0].value == pytest.approx(0.2)
    mild = [(t, 1.1) for t in range(310, 600, 30)]  # +10 %
    assert evaluate([rule], {"cost_per_job": before + mild}, now=600)[0] == []


def test_the_defaults_follow_the_settings():
    with dask.config.set({"packlab.telemetry.alerts.utilisation-low": 0.3,
                          "packlab.telemetry.alerts.window": "10m"}):
        rule = by_name("utilisation-low")
    assert (rule.threshold, rule.window) == (0.3, 600.0)


# -- firing, dedup, cooldown, resolution ---------------------------------------------------
def high_rule(cooldown=600):
    return Rule("busy", "utilisation", "above_for", 0.9, window=60, cooldown=cooldown, min_samples=1)


def series(level, until, since=0):
    return {"utilisation": [(t, level) for t in range(since, until + 1, 10)]}


def test_fire_once_while_it_holds_then_resolve_once():
    rule = high_rule()
    alerts, st = evaluate([rule], series(0.95, 60), now=60)
    assert statuses(alerts) == [("busy", "firing")]
    for now in (70, 80, 90):  # still holding: deduplicated
        alerts, st = evaluate([rule], series(0.95, now), now=now, state=st)
        assert alerts == []
    alerts, st = evaluate([rule], series(0.5, 100, since=40), now=100, state=st)
    assert statuses(alerts) == [("busy", "resolved")]
    assert "is back under 0.9" in alerts[0].message
    alerts, st = evaluate([rule], series(0.5, 110, since=50), now=110, state=st)
    assert alerts == []  # resolved once


def test_cooldown_suppresses_a_flapping_rule_then_lets_it_fire():
    rule = high_rule(cooldown=600)
    _, st = evaluate([rule], series(0.95, 60), now=60)                               # fires at 60
    alerts, st = evaluate([rule], series(0.2, 120, since=60), now=120, state=st)    # resolves
    assert statuses(alerts) == [("busy", "resolved")]
    alerts, st = evaluate([rule], series(0.95, 200, since=140), now=200, state=st)  # holds again at 200:
    assert alerts == [] and st["busy"] == RuleState(announced=False, last_fired=60)  # within cooldown
    alerts, st = evaluate([rule], series(0.95, 660, since=600), now=660, state=st)  # 600 s after 60
    assert statuses(alerts) == [("busy", "firing")] and st["busy"].last_fired == 660
    # a rule held silently in its cooldown that clears sends no resolution either
    rule = high_rule(cooldown=10_000)
    _, st = evaluate([rule], series(0.95, 60), now=60)
    _, st = evaluate([rule], series(0.2, 120, since=60), now=120, state=st)
    _, st = evaluate([rule], series(0.95, 200, since=140), now=200, state=st)
    alerts, st = evaluate([rule], series(0.2, 300, since=240), now=300, state=st)
    assert alerts == []


def test_missing_data_neither_fires_nor_resolves():
    rule = high_rule()
    _, st = evaluate([rule], series(0.95, 60), now=60)
    alerts, st2 = evaluate([rule], {}, now=70, state=st)  # the collector went quiet
    assert alerts == [] and st2 == st
    alerts, _ = evaluate([rule], {"utilisation": []}, now=80, state=st2)
    assert alerts == []


def test_several_rules_are_judged_independently_and_state_is_not_mutated():
    rules = [high_rule(), Rule("slow", "job_duration", "mean_above", 100, window=60, cooldown=0)]
    data = {**series(0.95, 60), "job_duration": [(10, 500), (20, 500), (30, 500)]}
    alerts, st = evaluate(rules, data, now=60)
    assert statuses(alerts) == [("busy", "firing"), ("slow", "firing")]
    frozen = dict(st)
    evaluate(rules, {"utilisation": [(60, 0.1), (120, 0.1)]}, now=120, state=st)
    assert st == frozen


# -- sinks ---------------------------------------------------------------------------------
ALERT = Alert("busy", "firing", "utilisation", 0.97, 0.9, "warning", 1234.5, "busy: utilisation high")


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list = []
    status = 204

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """The receivers are on this machine: a proxy from the environment must not be asked."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver():
    Receiver.received, Receiver.status = [], 204
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_the_webhook_posts_the_alert_as_json_to_a_real_server(receiver):
    result = WebhookSink(receiver + "/hooks/packlab", headers={"X-Token": "t"}).send(ALERT)
    assert result == Delivery("webhook", True, "HTTP 204")
    ((path, ctype, body),) = Receiver.received
    assert path == "/hooks/packlab" and ctype == "application/json"
    assert body == ALERT.to_dict() and body["status"] == "firing" and body["value"] == 0.97


def test_an_error_status_is_reported_not_raised(receiver, caplog):
    Receiver.status = 500
    with caplog.at_level(logging.WARNING, logger="packlab.alerts"):
        result = WebhookSink(receiver).send(ALERT)
    assert result == Delivery("webhook", False, "HTTP 500")
    assert "answered 500" in caplog.text


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_an_unreachable_webhook_is_reported_not_raised(caplog):
    with caplog.at_level(logging.WARNING, logger="packlab.alerts"):
        result = WebhookSink(f"http://127.0.0.1:{closed_port()}/x", timeout=2).send(ALERT)
    assert not result.ok and result.detail.startswith("unreachable")
    assert "unreachable" in caplog.text
    # deliver() over a dead receiver returns the failures and carries on with the other sinks
    got = []
    dead = WebhookSink(f"http://127.0.0.1:{closed_port()}")
    results = deliver([ALERT, ALERT], [dead, CallbackSink(got.append)])
    assert [r.ok for r in results] == [False, True, False, True] and got == [ALERT, ALERT]


def test_a_receiver_that_never_answers_times_out_and_is_reported():
    with socket.socket() as listener:  # accepts connections (the kernel's backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result = WebhookSink(f"http://127.0.0.1:{port}", timeout=0.3).send(ALERT)
    assert not result.ok and "unreachable" in result.detail


def test_the_log_sink_logs_at_the_alerts_severity(caplog):
    with caplog.at_level(logging.INFO, logger="packlab.alerts"):
        assert LogSink().send(ALERT).ok
        LogSink().send(Alert("busy", "resolved", "utilisation", 0.5, 0.9, "warning", 1, "busy: ok"))
    (fired, resolved) = caplog.records
    assert (fired.levelno, resolved.levelno) == (logging.WARNING, logging.INFO)
    assert "FIRING [warning] busy: utilisation high" in fired.getMessage()


def test_a_callback_that_raises_is_reported_not_raised(caplog):
    def broken(alert):
        raise RuntimeError("pager down")

    with caplog.at_level(logging.WARNING, logger="packlab.alerts"):
        result = CallbackSink(broken).send(ALERT)
    assert not result.ok and "pager down" in result.detail and "pager down" in caplog.text


def test_a_sink_of_ones_own_that_raises_does_not_stop_delivery():
    class Mine:
        name = "mine"

        def send(self, alert):
            raise OSError("disk full")

    got = []
    results = deliver([ALERT], [Mine(), CallbackSink(got.append)])
    assert [r.ok for r in results] == [False, True] and "disk full" in results[0].detail and got == [ALERT]


def test_the_notebook_sink_displays_the_alert_as_text(capsys):
    assert NotebookSink().send(ALERT).ok  # outside a notebook IPython prints it
    assert "ALERT [warning] busy: utilisation high" in capsys.readouterr().out


BAD_SINKS = [
    (lambda: WebhookSink("ftp://example.org/x"), "url='ftp://example.org/x' is invalid"),
    (lambda: WebhookSink("http://"), "url='http://' is invalid"),
    (lambda: WebhookSink(""), "url='' is invalid"),
    (lambda: WebhookSink("http://127.0.0.1", timeout=0), "timeout=0 is invalid"),
    (lambda: WebhookSink("http://127.0.0.1", headers={"X": 1}), "headers['X']=1 is invalid"),
    (lambda: CallbackSink("print"), "callback='print' is invalid"),
    (lambda: LogSink("packlab"), "logger='packlab' is invalid"),
    (lambda: deliver([ALERT], [print]), "sinks[0]=<built-in function print> is invalid"),
]


@pytest.mark.parametrize("make, says", BAD_SINKS, ids=[s for _, s in BAD_SINKS])
def test_a_bad_sink_is_refused_when_it_is_made(make, says):
    with pytest.raises(PacklabError) as err:
        make()
    assert says in str(err.value)
