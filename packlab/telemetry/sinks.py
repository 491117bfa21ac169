"""Where alerts go: the log, a Python callback, a notebook display, an HTTP webhook.

Every sink has one method, ``send(alert) -> Delivery``, and never raises: a failed
delivery (a webhook that is down, a callback that raises) is logged at WARNING and
returned, so an alert cannot break the work it watches. :func:`deliver` sends a batch.

Examples
--------
>>> from packlab.telemetry.alerts import Alert
>>> got = []
>>> deliver([Alert("r", "firing", "queue_depth", 5, 0, "info", 0, "r: growing")], [CallbackSink(got.append)])
[Delivery(sink='callback', ok=True, detail='')]
>>> got[0].message
'r: growing'
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any

from .. import checks
from ..errors import bad_value
from .alerts import Alert

log = logging.getLogger("packlab.alerts")


@dataclass(frozen=True)
class Delivery:
    """What became of one alert at one sink: ``ok``, and why not."""

    sink: str
    ok: bool
    detail: str = ""


class AlertSink:
    """Where alerts go. A sink implements ``send(alert) -> Delivery`` and never raises:
    a failure is returned (and logged), so an alert cannot break the work it watches."""

    name = "sink"

    def send(self, alert: Alert) -> Delivery:  # pragma: no cover - the interface
        raise NotImplementedError


_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


class LogSink(AlertSink):
    """Alerts as log records on ``logger`` (default ``packlab.alerts``), at the level of
    their severity; a resolution at INFO.

    Examples
    --------
    >>> LogSink().send(Alert("r", "resolved", "utilisation", 0.5, 0.9, "warning", 0.0, "r: ok")).ok
    True
    """

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        if logger is not None and not isinstance(logger, logging.Logger):
            raise bad_value("logger", logger, "a logging.Logger", 'E.g. logging.getLogger("mine").')
        self.logger = logger or log

    def send(self, alert: Alert) -> Delivery:
        level = _LEVELS[alert.severity] if alert.status == "firing" else logging.INFO
        self.logger.log(level, "%s [%s] %s", alert.status.upper(), alert.severity, alert.message)
        return Delivery(self.name, True)


class CallbackSink(AlertSink):
    """Alerts passed to ``callback(alert)``; what it raises is logged and returned."""

    name = "callback"

    def __init__(self, callback: Callable[[Alert], Any]) -> None:
        if not callable(callback):
            raise bad_value("callback", callback, "a function taking one Alert", "E.g. CallbackSink(print).")
        self.callback = callback

    def send(self, alert: Alert) -> Delivery:
        try:
            self.callback(alert)
        except Exception as e:
            log.warning("alert callback %r failed on %s: %r", self.callback, alert.rule, e)
            return Delivery(self.name, False, f"the callback raised {e!r}")
        return Delivery(self.name, True)


class _Text:
    """Plain text that IPython shows as it is (and ``print`` too)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class NotebookSink(AlertSink):
    """Alerts shown in the notebook (or the terminal) with ``IPython.display``."""

    name = "notebook"

    def send(self, alert: Alert) -> Delivery:
        try:
            from IPython.display import display
        except ImportError:
            return Delivery(self.name, False, "IPython is not installed")
        icon = {"firing": "ALERT", "resolved": "RESOLVED"}[alert.status]
        display(_Text(f"{icon} [{alert.severity}] {alert.message}"))
        return Delivery(self.name, True)


class WebhookSink(AlertSink):
    """Alerts POSTed as JSON (:meth:`Alert.to_dict`) to ``url``; a 2xx answer is delivered.

    An unreachable receiver, a timeout or an error status is logged at WARNING and
    returned as ``Delivery(ok=False)``, never raised. ``timeout`` (seconds, at most 60) is
    short by default so that a dead receiver costs little. The ``*_proxy`` environment
    variables apply, as for any ``urllib`` request.
    """

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 2.0, headers: Mapping[str, str] | None = None) -> None:
        checks.text(url, "url", expected="an http:// or https:// URL")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise bad_value("url", url, "an http:// or https:// URL with a host",
                            'E.g. "https://hooks.example.org/packlab".')
        self.url = url
        self.timeout = checks.number(timeout, "timeout", above=0, maximum=60)
        self.headers = checks.mapping_of(dict(headers or {}), "headers", checks.text)

    def send(self, alert: Alert) -> Delivery:
        body = json.dumps(alert.to_dict()).encode()
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "packlab-alerts", **self.headers})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                status = resp.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (urllib.error.URLError, HTTPException, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            log.warning("alert webhook %s unreachable for %s: %s", self.url, alert.rule, reason)
            return Delivery(self.name, False, f"unreachable: {reason}")
        if not 200 <= status < 300:
            log.warning("alert webhook %s answered %s for %s", self.url, status, alert.rule)
            return Delivery(self.name, False, f"HTTP {status}")
        return Delivery(self.name, True, f"HTTP {status}")


def deliver(alerts: Iterable[Alert], sinks: Iterable[AlertSink]) -> list[Delivery]:
    """Send each alert to each sink; never raises, even for a sink of the user's own
    that does.

    It blocks while sinks deliver (a webhook up to its ``timeout`` per alert): call it
    from a thread of its own, never from the scheduler's event loop.

    Examples
    --------
    >>> got = []
    >>> deliver([Alert("r", "firing", "queue_depth", 1, 0, "info", 0, "r")], [CallbackSink(got.append)])
    [Delivery(sink='callback', ok=True, detail='')]
    """
    sinks = list(sinks)
    for i, s in enumerate(sinks):
        if not callable(getattr(s, "send", None)):
            raise bad_value(f"sinks[{i}]", s, "an AlertSink (an object with send(alert))",
                            "E.g. LogSink() or WebhookSink(url).")
    out = []
    for alert in alerts:
        for s in sinks:
            try:
                result = s.send(alert)
            except Exception as e:
                log.warning("alert sink %r failed on %s: %r", s, alert.rule, e)
                result = Delivery(getattr(s, "name", type(s).__name__), False, f"the sink raised {e!r}")
            out.append(result)
    return out
