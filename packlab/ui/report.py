"""``packlab report``'s HTML: the panel's plots and the advisor's findings in one file.

The file holds BokehJS inline (``bokeh.resources.INLINE``) and its data, so it opens
offline, on a laptop or an air-gapped login node, and makes no request to any network.
History is downsampled to ``packlab.panel.report-points`` points per line (a day at 1 s
becomes 2-minute points), which keeps a day of a large cluster to a few MB.

Examples
--------
>>> import packlab, tempfile, os
>>> d = tempfile.mkdtemp()
>>> store = os.path.join(d, "t.db")
>>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True, store=store) as pc:
...     _ = pc.client.gather(pc.client.map(abs, range(-5, 5)))
>>> path = write(store, os.path.join(d, "report.html"))
>>> "Worker health" in open(path).read()
True
"""

from __future__ import annotations

import os
from typing import Any

from .feed import Feed
from .panel import Panel


def html(source: Any, *, title: str = "packlab report", points: int | None = None) -> str:
    """The report of a store (or a monitor, or a cluster) as one self-contained HTML page."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    p = Panel(Feed(source, points=points))
    return file_html(p.layout, INLINE, title=title)


def write(
    source: Any, path: str | os.PathLike, *, title: str = "packlab report", points: int | None = None
) -> str:
    """Write :func:`html` to ``path``; the path."""
    page = html(source, title=title, points=points)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return os.fspath(path)


__all__ = ["html", "write"]
