"""``packlab.ui.document``: the Bokeh document that JupyterLab's packlab tab shows.

One factory function builds the whole document, so a host (the JupyterLab extension's
in-process Bokeh server today, ``packlab dashboard`` later) serves it without knowing
what it draws. Today it draws a queue store: the jobs done as a live counter, the jobs by
status, and the queue depth over time, sampled from the store once a second (read-only:
the store's WAL lets it read while the queue writes). A store that holds a cluster's
telemetry (a queue on a packlab cluster, ``launch(store=)``) gets the full panel of
utilisation and cost instead (:func:`packlab.ui.panel.make_document`).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..errors import PacklabError, PacklabRuntimeError
from ..queue.states import DEAD, DONE, FAILED, QUEUED, RETRYING, RUNNING, STATUSES

#: How a status is coloured: a status page's colours (green done, red failures).
COLOURS = {QUEUED: "#3b82f6", RUNNING: "#f59e0b", RETRYING: "#a855f7", DONE: "#16a34a",
           FAILED: "#dc2626", DEAD: "#7f1d1d", "cancelled": "#9ca3af"}
#: Samples of the depth line kept (an hour at 1 Hz).
HISTORY = 3600


def queue_summary(counts: dict[str, int]) -> dict[str, int]:
    """The numbers the panel shows, from a store's jobs per status.

    The queue depth is what waits to run: queued and retrying jobs (running ones are on
    Dask already).

    Examples
    --------
    >>> queue_summary({"done": 7, "queued": 3, "retrying": 1, "running": 2, "dead": 1})
    {'done': 7, 'depth': 4, 'running': 2, 'failed': 1, 'total': 14}
    """
    return {"done": counts.get(DONE, 0), "depth": counts.get(QUEUED, 0) + counts.get(RETRYING, 0),
            "running": counts.get(RUNNING, 0), "failed": counts.get(FAILED, 0) + counts.get(DEAD, 0),
            "total": sum(counts.values())}


def resolve_store(store: str | os.PathLike | None) -> str:
    """The store to draw: ``store``, else the most recent one of the registry, else the
    ``packlab.queue.store`` setting (relative to the current directory)."""
    if store is not None:
        return os.path.abspath(os.path.expanduser(os.fspath(store)))
    from ..clusters import registry

    recent = registry.recent_stores()
    if recent:
        return recent[0]["path"]
    from .. import config

    return os.path.abspath(os.path.expanduser(config.get("queue.store")))


def has_telemetry(path: str) -> bool:
    """Whether the store at ``path`` holds a cluster's telemetry (then the full panel is
    drawn; a queue store without it, e.g. a queue on a plain Dask cluster, gets the queue's
    own counters).

    Examples
    --------
    >>> has_telemetry("no-such.db")
    False
    """
    from ..telemetry.tables import open_for_reading

    if not os.path.exists(path):
        return False
    try:
        _, con = open_for_reading(path)
    except (PacklabError, PacklabRuntimeError, OSError):
        return False
    con.close()
    return True


def read_counts(path: str) -> dict[str, int] | None:
    """Jobs per status of the store at ``path`` (opened read-only), or ``None`` if there
    is no readable store there (yet)."""
    from ..queue.jobstore import Store

    try:
        s = Store(path, mode="ro")
    except (PacklabError, PacklabRuntimeError):
        return None
    try:
        return s.counts()
    finally:
        s.close()


def _counter(label: str, colour: str, css: str):
    from bokeh.models import Div

    return Div(text=_counter_html(0, label), css_classes=["packlab-counter", css], width=170, height=78,
               styles={"border-left": f"6px solid {colour}", "background": "#f8fafc", "padding": "6px 12px",
                       "border-radius": "6px", "font-family": "system-ui, sans-serif"})


def _counter_html(n: int, label: str) -> str:
    return (f'<div style="font-size:28px;font-weight:600;line-height:1.1" class="value">{n:,}</div>'
            f'<div style="font-size:13px;color:#475569">{label}</div>')


def document(doc: Any, store: str | os.PathLike | None = None, interval: float = 1.0) -> None:
    """Build packlab's live panel in the Bokeh document ``doc``.

    Parameters
    ----------
    doc : bokeh.document.Document
        The document to fill (a Bokeh server session's, or a new one).
    store : str, optional
        The queue store to draw (default: :func:`resolve_store`). A store that does not
        exist yet is drawn once it does.
    interval : float
        Seconds between two reads of the store (1 Hz by default).

    Examples
    --------
    >>> from bokeh.document import Document
    >>> doc = Document()
    >>> document(doc, store="no-such.db")
    >>> doc.title
    'packlab panel'
    """
    from bokeh.layouts import column, row
    from bokeh.models import ColumnDataSource, DatetimeTickFormatter, Div, HoverTool
    from bokeh.plotting import figure

    path = resolve_store(store)
    if has_telemetry(path):  # the full panel of utilisation and cost (packlab.ui.panel)
        from .panel import make_document

        make_document(doc, path, interval=interval)
        return
    head = Div(text="", css_classes=["packlab-title"], sizing_mode="stretch_width",
               styles={"font-family": "system-ui, sans-serif"})
    counters = {"done": _counter("jobs done", COLOURS[DONE], "packlab-done"),
                "depth": _counter("queue depth", COLOURS[QUEUED], "packlab-depth"),
                "running": _counter("running", COLOURS[RUNNING], "packlab-running"),
                "failed": _counter("failed or dead", COLOURS[FAILED], "packlab-failed")}
    labels = {"done": "jobs done", "depth": "queue depth", "running": "running",
              "failed": "failed or dead"}

    history = ColumnDataSource({"t": [], "depth": [], "running": []})
    depth = figure(title="Queue depth over time", x_axis_type="datetime", height=340,
                   sizing_mode="stretch_width", toolbar_location=None, y_range=(0, 1))
    depth.line("t", "depth", source=history, color=COLOURS[QUEUED], line_width=2, legend_label="waiting")
    depth.line("t", "running", source=history, color=COLOURS[RUNNING], line_width=2, legend_label="running")
    depth.xaxis.axis_label = "time (local)"
    depth.yaxis.axis_label = "jobs"
    clock = "%H:%M:%S"
    depth.xaxis.formatter = DatetimeTickFormatter(milliseconds=clock, seconds=clock, minsec=clock,
                                                  minutes="%H:%M", hourmin="%H:%M", hours="%H:%M")
    depth.legend.orientation = "horizontal"
    depth.legend.location = "top_right"
    depth.legend.background_fill_alpha = 0.7
    depth.add_tools(HoverTool(tooltips=[("waiting", "@depth"), ("running", "@running")]))

    by_status = ColumnDataSource({"status": list(STATUSES), "jobs": [0] * len(STATUSES),
                                  "colour": [COLOURS[s] for s in STATUSES]})
    bars = figure(title="Jobs by status", y_range=list(reversed(STATUSES)), height=340, width=380,
                  toolbar_location=None, x_range=(0, 1))
    bars.hbar(y="status", right="jobs", height=0.7, color="colour", source=by_status)
    bars.xaxis.axis_label = "jobs"
    bars.ygrid.grid_line_color = None
    bars.add_tools(HoverTool(tooltips=[("status", "@status"), ("jobs", "@jobs")]))

    def update() -> None:
        counts = read_counts(path)
        name = os.path.basename(path)
        if counts is None:
            head.text = (f"<h2 style='margin:4px 0'>packlab · {name}</h2><span style='color:#b45309'>"
                         f"no queue store at {path} yet: it is drawn once a JobQueue writes it.</span>")
            counts = {}
        else:
            head.text = (f"<h2 style='margin:4px 0'>packlab · {name}</h2><span style='color:#475569'>"
                         f"{path} · read every {interval:g} s</span>")
        summary = queue_summary(counts)
        for key, div in counters.items():
            div.text = _counter_html(summary[key], labels[key])
        jobs = [counts.get(s, 0) for s in STATUSES]
        by_status.data = {**by_status.data, "jobs": jobs}
        bars.x_range.end = max(1, max(jobs) * 1.1)
        history.stream({"t": [time.time() * 1000], "depth": [summary["depth"]],
                        "running": [summary["running"]]}, rollover=HISTORY)
        depth.y_range.end = max(1, max(max(history.data["depth"]), max(history.data["running"])) * 1.3)

    update()
    doc.title = "packlab panel"
    doc.add_root(column(head, row(*counters.values()), row(depth, bars, sizing_mode="stretch_width"),
                        sizing_mode="stretch_width", styles={"padding": "8px 16px"}))
    if getattr(doc, "session_context", None) is not None:  # live only in a server session
        doc.add_periodic_callback(update, int(interval * 1000))
