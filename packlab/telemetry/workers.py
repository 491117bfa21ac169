"""The workers a store knows: each one's resources and whether it is still held.

A small read beside :class:`~.monitor.Monitor` for the panel's worker-health plot: the
sampled series carry what a worker uses, ``tel_workers`` what it has (threads, memory
limit, GPUs, market) and when it started and stopped.

Examples
--------
>>> import packlab, tempfile, os
>>> store = os.path.join(tempfile.mkdtemp(), "t.db")
>>> with packlab.launch(workers=1, cores=1, memory="1GiB", wait=True, store=store) as pc:
...     _ = pc.client.submit(abs, -1).result()
>>> [(w.threads, w.memory_limit, w.stopped is not None) for w in workers(packlab.monitor(store))]
[(1, 1073741824, True)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .tables import open_for_reading


@dataclass(frozen=True)
class WorkerInfo:
    """One worker: its address, name, threads, memory limit (bytes), GPUs, market, and
    when it started, was last seen and stopped (epoch seconds; ``stopped`` None: held)."""

    worker: str
    name: str
    threads: int
    memory_limit: int
    gpus: int
    market: str
    started: float
    seen: float | None
    stopped: float | None


def workers(m: Any) -> list[WorkerInfo]:
    """The workers of monitor ``m``'s scope (its cluster, or all the store holds)."""
    _, con = open_for_reading(m.store)
    try:
        where, args = ("cluster = ?", (m.cluster,)) if m.cluster else ("1=1", ())
        rows = con.execute(
            "SELECT worker, name, threads, memory, gpus, market, start, seen, stop FROM "
            f"tel_workers WHERE {where} ORDER BY start",
            args,
        ).fetchall()
    finally:
        con.close()
    return [
        WorkerInfo(w, str(n), int(t or 0), int(mem or 0), int(g or 0), str(mk), s, seen, stop)
        for w, n, t, mem, g, mk, s, seen, stop in rows
    ]


__all__ = ["WorkerInfo", "workers"]
