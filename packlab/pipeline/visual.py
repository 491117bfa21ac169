"""Drawing a pipeline: the layout is a pure function of the graph; Bokeh and SVG only draw it.

Stages are placed in columns by depth (the longest path from a stage without inputs), in
topological order within a column, and coloured by their state in a run.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any

from ..errors import PacklabError, bad_value
from .dag import Graph

COLOURS = {"pending": "#d9d9d9", "running": "#6baed6", "done": "#74c476", "cached": "#a1d99b",
           "failed": "#fb6a4a", "skipped": "#fdd0a2"}


def layout(graph: Graph) -> dict[str, tuple[int, int]]:
    """(column, row) of every stage: column = depth, row = order within the column.

    Examples
    --------
    >>> from packlab.pipeline.dag import make_spec, validate
    >>> def a(): pass
    >>> def b(a): pass
    >>> def c(a): pass
    >>> layout(validate([make_spec(a), make_spec(b), make_spec(c)]))
    {'a': (0, 0), 'b': (1, 0), 'c': (1, 1)}
    """
    depth: dict[str, int] = {}
    rows: dict[int, int] = {}
    out = {}
    for n in graph.order:
        d = max((depth[u] + 1 for u in graph.stages[n].upstream), default=0)
        depth[n] = d
        out[n] = (d, rows.get(d, 0))
        rows[d] = rows.get(d, 0) + 1
    return out


def states(graph: Graph, run: Any) -> dict[str, str]:
    """Each stage's state in ``run`` (``pending`` for all without a run)."""
    if run is None:
        return dict.fromkeys(graph.order, "pending")
    return {n: (run.stages[n].status if n in run.stages else "pending") for n in graph.order}


def edges(graph: Graph) -> list[tuple[str, str]]:
    return [(u, n) for n in graph.order for u in graph.stages[n].upstream]


def figure(pipe: Any, graph: Graph, run: Any):
    """A Bokeh figure of the DAG, stages coloured by state, with a hover tooltip."""
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure as bk_figure

    pos, st = layout(graph), states(graph, run)
    names = graph.order
    xs, ys = [pos[n][0] for n in names], [-pos[n][1] for n in names]
    info = {n: run.stages[n] for n in names} if run is not None else {}
    src = ColumnDataSource({
        "x": xs, "y": ys, "name": names, "state": [st[n] for n in names],
        "colour": [COLOURS.get(st[n], "#ffffff") for n in names],
        "seconds": [f"{info[n].seconds:.2f}" if n in info else "" for n in names],
        "attempts": [info[n].attempts if n in info else 0 for n in names],
    })
    width = max(400, 160 * (max(xs, default=0) + 1))
    height = max(200, 60 * (max((-y for y in ys), default=0) + 1))
    fig = bk_figure(title=f"pipeline {pipe.name}", width=width, height=height, tools="pan,wheel_zoom,reset",
                    x_range=(-0.6, max(xs, default=0) + 0.6), y_range=(min(ys, default=0) - 0.6, 0.6))
    ex, ey = [], []
    for u, n in edges(graph):
        ex.append([pos[u][0] + 0.35, pos[n][0] - 0.35])
        ey.append([-pos[u][1], -pos[n][1]])
    fig.multi_line(ex, ey, line_color="#888888", line_width=1.5)
    boxes = fig.rect("x", "y", width=0.7, height=0.5, source=src, fill_color="colour", line_color="#444444")
    fig.text("x", "y", text="name", source=src, text_align="center", text_baseline="middle",
             text_font_size="10pt")
    fig.add_tools(HoverTool(renderers=[boxes], tooltips=[("stage", "@name"), ("state", "@state"),
                                                        ("seconds", "@seconds"), ("attempts", "@attempts")]))
    fig.axis.visible = False
    fig.grid.visible = False
    return fig


def svg(pipe: Any, graph: Graph, run: Any) -> str:
    """The DAG as a standalone SVG document (built as an element tree, no browser needed)."""
    pos, st = layout(graph), states(graph, run)
    cw, rh, bw, bh = 170, 60, 130, 34
    cols = max((p[0] for p in pos.values()), default=0) + 1
    rows = max((p[1] for p in pos.values()), default=0) + 1
    root = ET.Element("svg", xmlns="http://www.w3.org/2000/svg", width=str(cols * cw + 20),
                      height=str(rows * rh + 50), **{"font-family": "sans-serif", "font-size": "12"})
    ET.SubElement(root, "text", x="10", y="18").text = f"pipeline {pipe.name}"

    def centre(n: str) -> tuple[float, float]:
        c, r = pos[n]
        return 10 + c * cw + bw / 2, 40 + r * rh + bh / 2

    for u, n in edges(graph):
        (x1, y1), (x2, y2) = centre(u), centre(n)
        ET.SubElement(root, "line", x1=str(x1 + bw / 2), y1=str(y1), x2=str(x2 - bw / 2), y2=str(y2),
                      stroke="#888888")
    for n in graph.order:
        x, y = centre(n)
        g = ET.SubElement(root, "g")
        ET.SubElement(g, "title").text = f"{n}: {st[n]}"
        ET.SubElement(g, "rect", x=str(x - bw / 2), y=str(y - bh / 2), width=str(bw), height=str(bh), rx="6",
                      fill=COLOURS.get(st[n], "#ffffff"), stroke="#444444")
        ET.SubElement(g, "text", x=str(x), y=str(y + 4), **{"text-anchor": "middle"}).text = n
    return ET.tostring(root, encoding="unicode")


def draw(pipe: Any, graph: Graph, run: Any, filename: str | None):
    """What ``Pipeline.visualize`` returns (and writes, with ``filename``)."""
    fig = figure(pipe, graph, run)
    if filename is None:
        return fig
    if not isinstance(filename, (str, os.PathLike)):
        raise bad_value("filename", filename, "a path ending in .html or .svg")
    path = os.fspath(filename)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".svg":
        with open(path, "w") as f:
            f.write(svg(pipe, graph, run))
    elif ext in (".html", ".htm"):
        from bokeh.io import save
        from bokeh.resources import INLINE

        save(fig, filename=path, resources=INLINE, title=f"pipeline {pipe.name}")
    elif ext == ".png":
        raise PacklabError(f"filename={path!r}: PNG export needs a browser driver (selenium with Chrome or "
                           "Firefox), which packlab does not install. Write .svg (standalone, no browser) "
                           "or .html instead.", field="filename", value=path)
    else:
        raise bad_value("filename", path, "a path ending in .svg or .html")
    return fig
