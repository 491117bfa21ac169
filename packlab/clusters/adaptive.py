"""Adaptive scaling with a cooldown, on top of Dask's own ``Adaptive``.

Dask's ``Adaptive`` decides (``recommendations``) and acts (``scale_up`` /
``scale_down``). We keep both and add one rule between them: no scale-down until
the cluster has wanted fewer workers than it has for ``cooldown`` seconds in a row
(nor within ``cooldown`` of a scale-up), and no scale-up within ``cooldown`` of a
scale-down, unless the cluster has no workers at all. A bursty workload whose
idle gaps are shorter than ``cooldown`` therefore keeps its workers instead of
thrashing batch-job submissions (each SLURM job costs queue time and accounting).
"""

from __future__ import annotations

import time
from typing import Any

from distributed.deploy.adaptive import Adaptive


def cooldown_decision(
    recommendation: dict,
    *,
    now: float,
    last_busy: float | None,
    last_down: float | None,
    cooldown: float,
    current: int,
) -> dict:
    """Hold a scale recommendation that would reverse a recent one.

    Pure function of state, so the rule is testable without a cluster. ``last_busy``
    is when the cluster last scaled up or last wanted at least as many workers as it
    has; ``last_down`` when it last scaled down.

    Examples
    --------
    >>> cooldown_decision({"status": "down", "workers": ["a"]}, now=10.0,
    ...                   last_busy=5.0, last_down=None, cooldown=60.0, current=1)
    {'status': 'same', 'held': 'down'}
    >>> cooldown_decision({"status": "up", "n": 2}, now=10.0, last_busy=None,
    ...                   last_down=5.0, cooldown=60.0, current=0)
    {'status': 'up', 'n': 2}
    """
    status = recommendation["status"]
    if status == "down" and last_busy is not None and now - last_busy < cooldown:
        return {"status": "same", "held": "down"}
    # Scaling up from zero is never held: work is waiting and nothing can run it.
    if status == "up" and current > 0 and last_down is not None and now - last_down < cooldown:
        return {"status": "same", "held": "up"}
    return recommendation


class CooldownAdaptive(Adaptive):
    """Dask ``Adaptive`` that refuses to reverse a scaling step within ``cooldown``.

    Parameters
    ----------
    cluster : distributed.deploy.Cluster
    cooldown : float
        Seconds; 0 disables the rule (plain Dask behaviour).
    **kwargs
        ``minimum``, ``maximum``, ``interval``, ``wait_count`` as for Dask's ``Adaptive``.

    Attributes
    ----------
    scale_ups, scale_downs : int
        How many scaling actions were taken; ``held`` counts recommendations held back.
    last_up, last_down, last_busy : float or None
        ``time.monotonic()`` of the last scale-up, the last scale-down, and the last
        time the cluster wanted at least as many workers as it had.
    """

    def __init__(self, cluster: Any = None, cooldown: float = 0.0, **kwargs: Any):
        self.cooldown = float(cooldown)
        self.last_up: float | None = None
        self.last_down: float | None = None
        self.last_busy: float | None = None
        self.scale_ups = 0
        self.scale_downs = 0
        self.held = 0
        super().__init__(cluster, **kwargs)

    async def recommendations(self, target: int) -> dict:
        now = time.monotonic()
        # Dask's target is what the load needs now; while it is at least the current
        # size the cluster is busy, and the cooldown on scaling down starts afresh.
        if target >= len(self.plan):
            self.last_busy = now
        rec = await super().recommendations(target)
        decided = cooldown_decision(
            rec,
            now=now,
            last_busy=self.last_busy,
            last_down=self.last_down,
            cooldown=self.cooldown,
            current=len(self.plan),
        )
        if decided is not rec:
            self.held += 1
            decided = {"status": "same"}
        return decided

    async def scale_up(self, n: int) -> None:
        self.last_up = self.last_busy = time.monotonic()
        self.scale_ups += 1
        await super().scale_up(n)

    async def scale_down(self, workers: Any) -> None:
        self.last_down = time.monotonic()
        self.scale_downs += 1
        await super().scale_down(workers)
