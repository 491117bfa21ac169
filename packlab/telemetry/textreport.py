"""The summary ``packlab report`` prints: the five metrics, cost with its idle share and the
top findings, as a terminal table or a simple HTML page (the panel draws the rich one).

Examples
--------
>>> from packlab.telemetry.monitor import Snapshot
>>> s = Snapshot(at=0, queue_depth=3, utilisation=0.5, duration_p50=1.0, duration_p95=2.0, failure_rate=0.1,
...              cost_per_job=0.02, currency="USD", cost_total=1.0, cost_idle=0.25, idle_share=0.25, jobs=40,
...              jobs_failed=4, jobs_completed_today=36, workers=2,
...              duration_trend="Avg duration 1 s, unchanged", duration_change=0.0,
...              cost_trend="Cost trend flat", cost_change=0.0)
>>> for line in text(s, []).splitlines()[:4]:
...     print(line)
metric                    value
queue depth               3 jobs
worker utilisation        50.0 %
job duration p50 / p95    1 s / 2 s
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from ..units import format_money
from .advisor import Finding
from .monitor import Snapshot

TOP = 5  # findings shown


def _secs(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g} s" if x < 120 else f"{x / 60:.3g} min"


def rows(s: Snapshot) -> list[tuple[str, str]]:
    """The summary as ``(metric, value)`` rows."""

    def money(x: float | None) -> str:
        return format_money(x, s.currency)

    return [
        ("queue depth", f"{s.queue_depth} jobs"),
        ("worker utilisation", f"{s.utilisation * 100:.1f} %"),
        ("job duration p50 / p95", f"{_secs(s.duration_p50)} / {_secs(s.duration_p95)}"),
        ("failure rate", f"{s.failure_rate * 100:.1f} % ({s.jobs_failed} of {s.jobs} jobs)"),
        ("cost per job", money(s.cost_per_job)),
        ("cost in all", f"{money(s.cost_total)}, idle {money(s.cost_idle)} "
                        f"({s.idle_share * 100:.0f} %)"),
        *([("SLURM service units", f"{s.service_units:,.4g} SU ({money(s.service_units_cost)})")]
          if s.service_units is not None else []),
        ("jobs completed today", str(s.jobs_completed_today)),
        ("duration trend", s.duration_trend),
        ("cost trend", s.cost_trend),
        ("workers held now", str(s.workers)),
    ]


def findings_text(findings: Sequence[Finding], top: int | None = TOP) -> str:
    """One block per finding: severity, name, message, and the fix to paste."""
    if not findings:
        return "no findings: nothing to change."
    out = []
    for f in list(findings)[:top]:
        out.append(f"[{f.severity}] {f.name}: {f.message}\n    fix: {f.fix}")
    if top is not None and len(findings) > top:
        out.append(f"... and {len(findings) - top} more (packlab advise --store ...)")
    return "\n".join(out)


def text(s: Snapshot, findings: Sequence[Finding]) -> str:
    """The terminal report."""
    r = rows(s)
    w = max(len(k) for k, _ in r) + 4
    table = "\n".join([f"{'metric':<{w}}value", *(f"{k:<{w}}{v}" for k, v in r)])
    return f"{table}\n\ntop findings\n{findings_text(findings)}"


def html_page(s: Snapshot, findings: Sequence[Finding], title: str = "packlab report") -> str:
    """A self-contained HTML page of the same summary (no scripts, no external files)."""
    e = html.escape
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows(s))
    items = "".join(f"<li><b>[{e(f.severity)}] {e(f.name)}</b>: {e(f.message)}<br>"
                    f"<code>{e(f.fix)}</code></li>" for f in findings[:TOP])
    items = items or "<li>no findings: nothing to change.</li>"
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em} th{text-align:left;padding-right:2em} "
            "code{background:#f3f3f3;padding:2px}</style></head><body>"
            f"<h1>{e(title)}</h1><table>{body}</table><h2>Top findings</h2><ul>{items}</ul></body></html>\n")


__all__ = ["findings_text", "html_page", "rows", "text"]
