"""``packlab.ui.panel``: the pack's utilisation and cost on one Bokeh page, drawn only.

Every number comes from :class:`packlab.ui.feed.Feed` (what ``packlab.monitor`` computes,
turned into plot data by :mod:`packlab.ui.viewmodel`); this module makes the figures and
copies each :class:`~packlab.ui.feed.Frame` into their sources. The same :class:`Panel`
is shown inline in a notebook (jupyter_bokeh's ``BokehModel``: over the kernel's own
connection, no port, BokehJS from the extension, no CDN), served by ``packlab dashboard``
(:func:`make_document`) and saved by ``packlab report`` (:mod:`packlab.ui.report`).

Reads run off the drawing thread: in a Bokeh server a worker thread reads and the
document's next tick applies the frame, so a slow read never blocks a page.

Examples
--------
>>> import packlab, tempfile, os
>>> store = os.path.join(tempfile.mkdtemp(), "t.db")
>>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True, store=store) as pc:
...     _ = pc.client.gather(pc.client.map(abs, range(-5, 5)))
>>> p = panel(store)
>>> p.frame.snapshot.jobs, len(p.figures)
(10, 6)
"""

from __future__ import annotations

import html
import logging
import sys
import threading
import types
from functools import partial
from typing import Any

from bokeh.layouts import column, row
from bokeh.models import (
    BasicTickFormatter,
    ColumnDataSource,
    DatetimeTickFormatter,
    Div,
    HoverTool,
    Range1d,
    Span,
)
from bokeh.plotting import figure

from .. import checks, config
from . import viewmodel as vm
from .feed import Feed, Frame

log = logging.getLogger("packlab.ui")

WIDTH, HEIGHT = 510, 270  # one plot; two side by side (about 1,040 px: a notebook beside its sidebar)
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def _figure(title: str, y_label: str, *, x_time: bool = True, **kw: Any):
    f = figure(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        x_axis_type="datetime" if x_time else "linear",
        toolbar_location="right",
        tools="pan,wheel_zoom,box_zoom,reset,save",
        **kw,
    )
    f.title.text_font, f.title.text_font_size, f.title.text_color = FONT, "14px", "#24292e"
    f.yaxis.axis_label = y_label
    f.xaxis.axis_label = "time (UTC)" if x_time else f.xaxis.axis_label
    for ax in (*f.xaxis, *f.yaxis):
        ax.axis_label_text_font, ax.axis_label_text_font_style = FONT, "normal"
        ax.axis_label_text_font_size, ax.major_label_text_font_size = "12px", "11px"
    if x_time:
        f.xaxis.formatter = DatetimeTickFormatter(
            milliseconds="%H:%M:%S.%3N",
            seconds="%H:%M:%S",
            minsec="%H:%M:%S",
            minutes="%H:%M",
            hourmin="%H:%M",
            hours="%H:%M",
            days="%d %b",
        )
    f.outline_line_color, f.grid.grid_line_alpha = "#e1e4e8", 0.6
    f.toolbar.logo = None
    f.min_border_left, f.min_border_right = 60, 20
    return f


def _lines_data(lines: dict[str, tuple[Any, Any]]) -> dict[str, list]:
    names = list(lines)
    return {
        "xs": [vm.to_ms(lines[n][0]).tolist() for n in names],
        "ys": [lines[n][1].tolist() for n in names],
        "label": names,
        "colour": [vm.LINES[i % len(vm.LINES)] for i in range(len(names))],
    }


def _xy(x: Any, y: Any) -> dict[str, list]:
    return {"x": vm.to_ms(x).tolist(), "y": list(map(float, y))}


class Panel:
    """The Bokeh layout of one :class:`~packlab.ui.feed.Feed` and how to refresh it.

    Make it with :func:`panel`. ``layout`` is the Bokeh root; :meth:`refresh` reads and
    draws once; in a notebook the panel displays itself and, following a cluster,
    refreshes every ``interval`` seconds in a thread until :meth:`stop`.
    """

    def __init__(self, feed: Feed, *, interval: float | None = None) -> None:
        self.feed = feed
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = threading.Lock()
        self._build()
        self.frame: Frame = feed.read()
        self.apply(self.frame)

    # -- figures -----------------------------------------------------------------------
    def _build(self) -> None:
        self.header = Div(width=2 * WIDTH, styles={"font-family": FONT}, css_classes=["packlab-title"])
        self.cards = Div(width=2 * WIDTH)
        self.findings = Div(width=2 * WIDTH, styles={"font-family": FONT})
        self.pipelines = Div(width=2 * WIDTH, styles={"font-family": FONT})

        self.queue_src = ColumnDataSource(_lines_data({}))
        q = self.queue_fig = _figure("Queue depth by priority class", "jobs waiting")
        q.multi_line(
            "xs", "ys", source=self.queue_src, line_color="colour", line_width=2, legend_field="label"
        )
        q.y_range.start = 0
        self._legend_at = {q: "top_right"}

        self.worker_src = ColumnDataSource({"cpu": [], "memory": [], "colour": [], "name": [], "state": []})
        w = self.worker_fig = _figure(
            "Worker health", "memory (% of limit)", x_time=False, y_range=Range1d(-3, 105)
        )
        w.xaxis.axis_label = "CPU in use (% of its cores)"
        w.scatter(
            "cpu",
            "memory",
            source=self.worker_src,
            size=13,
            fill_color="colour",
            line_color="white",
            line_width=1.5,
        )
        w.add_tools(
            HoverTool(
                tooltips=[
                    ("worker", "@name"),
                    ("state", "@state"),
                    ("CPU", "@cpu{0} %"),
                    ("memory", "@memory{0} %"),
                ]
            )
        )
        w.x_range = Range1d(-3, 105)
        for level, colour in ((vm.MEMORY_WARN, vm.WARN), (vm.MEMORY_BAD, vm.BAD)):
            w.add_layout(
                Span(
                    location=level * 100,
                    dimension="width",
                    line_color=colour,
                    line_dash="dashed",
                    line_alpha=0.7,
                )
            )

        self.util_src = ColumnDataSource(_lines_data({}))
        u = self.util_fig = _figure("Utilisation", "% of capacity", y_range=Range1d(0, 105))
        u.multi_line(
            "xs", "ys", source=self.util_src, line_color="colour", line_width=2, legend_field="label"
        )

        self.dur_src = ColumnDataSource({"x": [], "y": []})
        self.p50_src, self.p95_src = (
            ColumnDataSource({"x": [], "y": []}),
            ColumnDataSource({"x": [], "y": []}),
        )
        d = self.dur_fig = _figure("Job duration", "seconds per job")
        d.scatter("x", "y", source=self.dur_src, size=4, color="#9aa0a6", alpha=0.5, legend_label="a job")
        d.line("x", "y", source=self.p50_src, color=vm.LINES[0], line_width=2, legend_label="p50")
        d.line("x", "y", source=self.p95_src, color=vm.LINES[1], line_width=2, legend_label="p95")
        self.sla_span = Span(
            location=0, dimension="width", line_color=vm.BAD, line_dash="dashed", visible=False
        )
        d.add_layout(self.sla_span)
        d.y_range.start = 0

        self.fail_src = ColumnDataSource({"x": [], "y": []})
        fl = self.fail_fig = _figure("Failure rate", "% of jobs ending failed", y_range=Range1d(0, 100))
        fl.line("x", "y", source=self.fail_src, color=vm.BAD, line_width=2)
        fl.scatter("x", "y", source=self.fail_src, color=vm.BAD, size=5)
        self.fail_span = Span(
            location=0, dimension="width", line_color=vm.WARN, line_dash="dashed", visible=False
        )
        fl.add_layout(self.fail_span)

        self.cost_src = ColumnDataSource({"x": [], "y": []})
        c = self.cost_fig = _figure("Cost per job", "cost per job")
        c.line("x", "y", source=self.cost_src, color=vm.LINES[2], line_width=2)
        c.scatter("x", "y", source=self.cost_src, color=vm.LINES[2], size=5)
        c.y_range.start = 0
        c.yaxis.formatter = BasicTickFormatter(precision=2, power_limit_low=-3)

        self.figures = [q, w, u, d, fl, c]
        for f in self.figures:
            if f.legend:
                f.legend.location = self._legend_at.get(f, "top_left")
                f.legend.label_text_font_size = "11px"
                f.legend.background_fill_alpha, f.legend.border_line_alpha = 0.7, 0
        self.layout = column(
            self.header,
            self.cards,
            row(q, w),
            row(u, d),
            row(fl, c),
            self.findings,
            self.pipelines,
            styles={"background": "white", "padding": "8px"},
        )

    # -- drawing ---------------------------------------------------------------------------
    def apply(self, fr: Frame) -> None:
        """Copy one frame into the figures (on the document's thread)."""
        self.frame = fr
        s = fr.snapshot
        where = f"live, read every {self.interval:g} s" if self.interval else "history"
        stamp = _clock(fr.at)
        self.header.text = (
            f"<div style='font-size:20px;font-weight:600;color:#24292e'>packlab: pack compute"
            f"</div><div style='font-size:12px;color:#586069;margin-top:2px'>{where} &middot; "
            f"{html.escape(self.feed.monitor.store)} &middot; read {stamp} UTC</div>"
        )
        self.cards.text = vm.cards_html(fr.cards)

        self.queue_src.data = _lines_data(fr.queue)
        total = fr.queue.get("all", ([], []))[1]
        growing = len(total) > 1 and total[-1] > total[0]
        self.queue_fig.legend.location = "top_left" if growing else "top_right"  # away from the line
        self.queue_fig.title.text = (
            "Queue depth by priority class: GROWING (alert)"
            if fr.queue_growing
            else f"Queue depth by priority class: {s.queue_depth} waiting"
        )
        self.queue_fig.title.text_color = vm.WARN if fr.queue_growing else "#24292e"

        ws = fr.workers
        self.worker_src.data = {
            "cpu": [w.cpu for w in ws],
            "memory": [100.0 * (w.memory_share or 0.0) for w in ws],
            "colour": [w.colour for w in ws],
            "name": [w.name for w in ws],
            "state": [w.state for w in ws],
        }
        self.worker_fig.title.text = f"Worker health: {fr.health_label}"

        self.util_src.data = _lines_data({k: v for k, v in fr.utilisation.items() if len(v[0])})

        self.dur_src.data = _xy(*fr.durations)
        self.p50_src.data, self.p95_src.data = _xy(*fr.p50), _xy(*fr.p95)
        if fr.sla:
            self.sla_span.location, self.sla_span.visible = fr.sla, True
        self.dur_fig.title.text = (
            f"Job duration: p50 {vm.seconds(s.duration_p50)}, p95 "
            f"{vm.seconds(s.duration_p95)} (SLA p95 {vm.seconds(fr.sla)})"
        )

        self.fail_src.data = _xy(*fr.failure)
        if fr.failure_limit is not None:
            self.fail_span.location, self.fail_span.visible = fr.failure_limit, True
        top = max([fr.failure_limit or 0, *fr.failure[1].tolist(), 5.0])
        self.fail_fig.y_range.end = min(100.0, top * 1.25)
        self.fail_fig.title.text = (
            f"Failure rate: {s.failure_rate * 100:.1f} % (alert above {fr.failure_limit or 0:g} %)"
        )

        self.cost_src.data = _xy(*fr.job_cost)
        self.cost_fig.yaxis.axis_label = f"cost per job ({s.currency})"
        self.cost_fig.title.text = f"Cost per job: {vm.money(s.cost_per_job, s.currency)}" + (
            f"; {s.cost_trend}" if s.cost_change is not None else "")
        self.findings.text = vm.findings_html(fr.alerts, fr.findings)
        self.pipelines.text = vm.pipelines_html(fr.pipelines)

    def refresh(self) -> Frame:
        """Read once and draw it (in the caller's thread)."""
        fr = self.feed.read()
        self.apply(fr)
        return fr

    # -- live ---------------------------------------------------------------------------
    def attach(self, doc: Any) -> None:
        """Add the layout to a Bokeh ``doc``; following a cluster or a store being written
        (``interval`` set), read every ``interval`` seconds in a thread and draw on the
        document's next tick."""
        doc.add_root(self.layout)
        doc.title = "packlab panel"
        if self.interval:
            doc.add_periodic_callback(partial(self._tick, doc), int(self.interval * 1000))

    def _tick(self, doc: Any) -> None:
        if not self._busy.acquire(blocking=False):
            return  # the last read is still running: skip this one

        def work() -> None:
            try:
                fr = self.feed.read()
                doc.add_next_tick_callback(partial(self.apply, fr))
            except Exception:
                log.warning("packlab panel: read failed", exc_info=True)
            finally:
                self._busy.release()

        threading.Thread(target=work, daemon=True, name="packlab-panel-read").start()

    def start(self) -> None:
        """Refresh every ``interval`` seconds in a thread (the notebook's way)."""
        if not self.interval or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="packlab-panel")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                fr = self.feed.read()
            except Exception:  # the cluster closed, the store went: stop quietly
                log.info("packlab panel: stopped reading", exc_info=True)
                return
            self.apply(fr)  # a notebook document has no server lock: jupyter_bokeh sends each change

    def stop(self) -> None:
        """Stop refreshing."""
        self._stop.set()

    def widget(self):
        """The panel as a jupyter_bokeh ``BokehModel`` widget (starting live refreshes);
        BokehJS is loaded into the page first, inline (no CDN), once per kernel."""
        from jupyter_bokeh import BokehModel

        load_bokehjs()
        w = BokehModel(self.layout)
        self.start()
        return w

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget())


_loaded = False


def load_bokehjs() -> None:
    """Put BokehJS into the notebook page from this process (``INLINE``: the Bokeh CDN is
    often unreachable from an HPC login node), once per kernel: jupyter_bokeh's widget
    renders with the page's BokehJS."""
    global _loaded
    if _loaded:
        return
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(resources=INLINE, hide_banner=True)
    _loaded = True


def _clock(t: float) -> str:
    import time as _time

    return _time.strftime("%H:%M:%S", _time.gmtime(t))


def panel(source: Any, *, interval: float | str | None = None, history: float | str | None = None) -> Panel:
    """The panel of a cluster, a monitor or a store: one Bokeh layout of queue depth,
    worker health, utilisation, job duration against the SLA, failure rate, cost, jobs
    completed today, the active alerts and the advisor's findings.

    Parameters
    ----------
    source : PackCluster, Monitor or str
        A cluster launched with telemetry (live), its monitor, or a store path (history).
    interval : float or str, optional
        Seconds between reads while following a cluster (default ``packlab.panel.interval``,
        1 s); a store alone is read once unless given one.
    history : float or str, optional
        History shown when it opens (default ``packlab.panel.history`` live, all for a store).

    Returns
    -------
    Panel
        ``.layout`` is the Bokeh root; in a notebook the panel displays inline.
    """
    feed = Feed(source, history=history)
    if interval is None and feed.live:
        interval = config.get("panel.interval")
    every = None if interval is None else checks.duration(interval, "interval", allow_zero=False)
    feed.interval = every or 1.0
    return Panel(feed, interval=every)


def make_document(doc: Any, source: Any, *, interval: float | str | None = None) -> Panel:
    """Add a live panel of ``source`` to the Bokeh ``doc`` (what ``packlab dashboard`` and
    the JupyterLab extension serve); it reads every ``interval`` (default
    ``packlab.panel.interval``) even for a store, which another process may be writing."""
    p = panel(source, interval=config.get("panel.interval") if interval is None else interval)
    p.attach(doc)
    return p


__all__ = ["Panel", "make_document", "panel"]


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`panel`: ``packlab.ui.panel(source)``."""

    def __call__(self, source: Any, **kwargs: Any) -> Panel:
        return panel(source, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
