"""The panel's top row and lists as plain data and HTML: the five metrics and the cost as
cards coloured like a status page's, the active alerts and the advisor's findings with
their fixes. Pure functions, no Bokeh (the panel sets them as a ``Div``'s text).

Examples
--------
>>> money(0.5, "USD"), seconds(90), seconds(5400), seconds(9000)
('0.5000 USD', '90 s', '90 min', '2.5 h')
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..units import format_money

OK, WARN, BAD, NONE = "#2e9e44", "#e0a100", "#d1344b", "#9aa0a6"
"""Status colours: fine, needs a look, needs action, no data."""
SEVERITY = {"info": "#3b7dd8", "warning": WARN, "critical": BAD}


# -- cards and lists ----------------------------------------------------------------------
def money(x: float | None, currency: str) -> str:
    """``"0.0123 USD"``, ``"6.3e-07 USD"``; ``"n/a"`` for ``None``
    (:func:`packlab.units.format_money`).

    Examples
    --------
    >>> money(0.0123, "USD"), money(6.3e-7, "EUR"), money(12.5, "USD")
    ('0.0123 USD', '6.3e-07 EUR', '12.50 USD')
    """
    return format_money(x, currency)


def seconds(x: float | None) -> str:
    """``"1.5 s"``, ``"3.2 min"``, ``"2.1 h"``; ``"n/a"`` for ``None``."""
    if x is None:
        return "n/a"
    return f"{x:.3g} s" if x < 120 else f"{x / 60:.3g} min" if x < 7200 else f"{x / 3600:.3g} h"


@dataclass(frozen=True)
class Card:
    """One number of the panel's top row: its label, the value as text, its status colour
    and a line under it."""

    label: str
    value: str
    colour: str = NONE
    note: str = ""


def cards(
    s: Any,
    *,
    healthy: str,
    sla: float | None,
    failure_limit: float | None,
    cost_rate: float | None,
    spot_savings: float | None,
    active: Iterable[str] = (),
) -> list[Card]:
    """The top row from a :class:`~packlab.telemetry.monitor.Snapshot` (``s``) and the
    few figures drawn beside it: ``healthy`` (:func:`health_label`), the SLA and failure
    rate limit of the alert rules, the cost per hour now and the spot savings; ``active``
    names the alert rules firing (their card turns red or amber)."""
    active = set(active)
    cur = s.currency
    n_ok, _, n_all = healthy.partition(" ")[0].partition("/")
    worker_colour_ = NONE if not n_all else OK if n_ok == n_all else WARN
    p95 = s.duration_p95
    dur_colour = (
        NONE
        if p95 is None
        else BAD
        if "job-duration-sla" in active
        else (WARN if sla and p95 > 0.8 * sla else OK)
    )
    fail_colour = (
        NONE
        if not s.jobs
        else BAD
        if "failure-rate" in active
        else (WARN if failure_limit and s.failure_rate > 0.5 * failure_limit else OK)
    )
    queue_colour = WARN if "queue-depth-growing" in active else OK
    util_colour = (
        WARN
        if {"utilisation-low", "utilisation-high"} & active
        else NONE
        if not s.workers and not s.jobs
        else OK
    )
    idle_colour = WARN if s.idle_share > 0.5 else OK if s.cost_total else NONE
    return [
        Card(
            "Queue depth",
            f"{s.queue_depth}",
            queue_colour,
            "growing" if "queue-depth-growing" in active else "jobs waiting",
        ),
        Card("Workers", healthy, worker_colour_, f"{s.workers} held now"),
        Card("Utilisation", f"{s.utilisation * 100:.0f} %", util_colour, "busy thread-seconds"),
        Card(
            "Duration p50 / p95",
            f"{seconds(s.duration_p50)} / {seconds(s.duration_p95)}",
            dur_colour,
            f"SLA {seconds(sla)}" if sla else s.duration_trend,
        ),
        Card(
            "Failure rate", f"{s.failure_rate * 100:.1f} %", fail_colour, f"{s.jobs_failed} of {s.jobs} jobs"
        ),
        Card(
            "Jobs completed today",
            f"{s.jobs_completed_today:,}",
            OK if s.jobs_completed_today else NONE,
            f"{s.jobs:,} finished in all",
        ),
        Card(
            "Cost so far",
            money(s.cost_total, cur),
            NONE,
            "no prices set (packlab.pricing)"
            if not s.cost_total
            else "rate n/a"
            if cost_rate is None
            else f"{money(cost_rate, cur)}/h now",
        ),
        Card(
            "Cost per job",
            money(s.cost_per_job, cur),
            WARN if "cost-per-job-up" in active else NONE,
            s.cost_trend,
        ),
        Card("Idle share", f"{s.idle_share * 100:.0f} %", idle_colour, f"{money(s.cost_idle, cur)} idle"),
        Card("Spot savings", money(spot_savings, cur), OK if spot_savings else NONE, "vs on-demand"),
    ]


def cards_html(cs: Sequence[Card]) -> str:
    """The cards as one HTML block (a grid of tiles, a coloured bar on each)."""
    e = html.escape
    tiles = "".join(
        f'<div class="plc" style="border-top:5px solid {c.colour}"><div class="pll">{e(c.label)}</div>'
        f'<div class="plv">{e(c.value)}</div><div class="pln">{e(c.note)}</div></div>'
        for c in cs
    )
    style = (
        "<style>.plg{display:grid;grid-template-columns:repeat(5,1fr);gap:10px;font-family:"
        "system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}.plc{background:#fafbfc;border:1px solid "
        "#e1e4e8;border-radius:6px;padding:8px 12px}.pll{font-size:12px;color:#586069;text-transform:"
        "uppercase;letter-spacing:.04em}.plv{font-size:22px;font-weight:600;color:#24292e;margin:2px 0;"
        "white-space:nowrap;overflow:hidden;text-overflow:ellipsis}.pln{font-size:12px;color:#6a737d;"
        "white-space:nowrap;overflow:hidden;text-overflow:ellipsis}</style>"
    )
    return f'{style}<div class="plg">{tiles}</div>'


def findings_html(alerts: Sequence[Any], findings: Sequence[Any], top: int = 8) -> str:
    """The active alerts and the advisor's findings (with their fixes) as HTML lists."""
    e = html.escape
    box = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:13px;color:#24292e"

    def badge(sev: str) -> str:
        return (
            f'<span style="background:{SEVERITY.get(sev, NONE)};color:white;border-radius:3px;'
            f'padding:1px 6px;font-size:11px;margin-right:6px">{e(sev.upper())}</span>'
        )

    a_items = "".join(f"<li style='margin:4px 0'>{badge(a.severity)}{e(a.message)}</li>" for a in alerts)
    a_items = a_items or (f"<li style='margin:4px 0;color:{OK}'>&#10003; no alert firing</li>")
    f_items = "".join(
        f"<li style='margin:6px 0'>{badge(f.severity)}<b>{e(f.name)}</b>: {e(f.message)}<br>"
        f"<code style='background:#f3f4f6;padding:2px 4px;border-radius:3px;font-size:12px'>{e(f.fix)}</code>"
        "</li>"
        for f in list(findings)[:top]
    )
    f_items = f_items or f"<li style='color:{OK}'>&#10003; no findings: nothing to change</li>"
    more = (
        f"<p style='color:#6a737d'>... and {len(findings) - top} more (packlab advise)</p>"
        if len(findings) > top
        else ""
    )
    return (
        f"<div style='{box}'><h3 style='margin:4px 0'>Active alerts</h3><ul style='padding-left:18px;"
        f"margin:0'>{a_items}</ul><h3 style='margin:10px 0 4px'>Advisor findings</h3>"
        f"<ul style='padding-left:18px;margin:0'>{f_items}</ul>{more}</div>"
    )


def pipelines_html(stages: Sequence[dict[str, Any]]) -> str:
    """The pipelines' stages that ran jobs (``Monitor.pipelines()``) as a table: units done
    and failed, retries, worker time; "" when no pipeline ran here.

    Examples
    --------
    >>> "etl" in pipelines_html([{"pipeline": "etl", "stage": "load", "done": 3, "failed": 0,
    ...                           "retries": 1, "busy_s": 2.5}])
    True
    >>> pipelines_html([])
    ''
    """
    if not stages:
        return ""
    e = html.escape
    box = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:13px;color:#24292e"
    cell = "padding:2px 10px;border-bottom:1px solid #e1e4e8"
    head = "".join(f"<th style='{cell};text-align:{a}'>{h}</th>" for h, a in (
        ("pipeline", "left"), ("stage", "left"), ("done", "right"), ("failed", "right"),
        ("retries", "right"), ("worker time", "right")))
    rows = "".join(
        f"<tr><td style='{cell}'>{e(st['pipeline'])}</td><td style='{cell}'>{e(st['stage'])}</td>"
        f"<td style='{cell};text-align:right;color:{OK}'>{st['done']}</td>"
        f"<td style='{cell};text-align:right;color:{SEVERITY['critical'] if st['failed'] else '#24292e'}'>"
        f"{st['failed']}</td><td style='{cell};text-align:right'>{st['retries']}</td>"
        f"<td style='{cell};text-align:right'>{st['busy_s']:.2f} s</td></tr>"
        for st in stages)
    return (f"<div style='{box}'><h3 style='margin:10px 0 4px'>Pipelines (stages that ran jobs)</h3>"
            f"<table style='border-collapse:collapse'><tr>{head}</tr>{rows}</table></div>")


def rule_threshold(rules: Iterable[Any], name: str) -> float | None:
    """The threshold of the alert rule named ``name`` (``None`` without one)."""
    return next((float(r.threshold) for r in rules if r.name == name), None)


__all__ = ["BAD", "NONE", "OK", "SEVERITY", "WARN", "Card", "cards", "cards_html", "findings_html", "money",
           "rule_threshold", "seconds"]
