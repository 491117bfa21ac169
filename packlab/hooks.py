"""Hooks: how a package takes part in a cluster's or a queue's life without the cluster or
the queue importing it (telemetry is the built-in user of both).

* **Cluster hooks** (:data:`CLUSTER_HOOKS`, entry-point group ``packlab.cluster_hooks``):
  ``launch()`` calls each hook's ``check(options)`` before anything starts (a bad option
  is refused with nothing started), then ``launched(pc, options)`` once the cluster's
  client is connected. ``options`` holds launch()'s arguments that hooks read
  (``telemetry``, ``store``, ``spot``). A hook that wants to be told when the cluster
  closes gives :meth:`packlab.PackCluster.attach` an object with ``close()`` (run before
  the cluster closes) and ``after_close()`` (after).
* **Queue hooks** (:data:`QUEUE_HOOKS`, group ``packlab.queue_hooks``): a
  :class:`packlab.JobQueue` calls ``opened(queue, cluster_or_client)`` as it opens; what
  it returns (``None``, or an object with ``close()``) is closed with the queue. An
  attachment with ``wants_spans = True`` makes the queue tag its hand-overs with Dask
  spans (they cost a little, so only when someone reads them). Hooks follow the queue's
  jobs through :meth:`packlab.JobQueue.subscribe`.

A queue hook never stops a queue from opening: one that raises is logged and left out. A
cluster hook's error stops ``launch()`` (which closes what it started), as a failure to
set up what was asked for (``launch(store=...)``) should.

Examples
--------
>>> class Count:
...     opened_queues = 0
...     def opened(self, queue, cluster_or_client):
...         self.opened_queues += 1
>>> QUEUE_HOOKS.register("count", Count())
>>> "count" in QUEUE_HOOKS
True
>>> QUEUE_HOOKS.unregister("count")
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .plugins import Registry

log = logging.getLogger("packlab")

CLUSTER_HOOKS: Registry[Any] = Registry("cluster hook", "packlab.cluster_hooks")
QUEUE_HOOKS: Registry[Any] = Registry("queue hook", "packlab.queue_hooks")


def check_cluster_options(options: Mapping[str, Any]) -> None:
    """Every cluster hook's ``check(options)`` (raises for bad input)."""
    for name in CLUSTER_HOOKS.names():
        check = getattr(CLUSTER_HOOKS[name], "check", None)
        if check is not None:
            check(options)


def cluster_launched(pc: Any, options: Mapping[str, Any]) -> None:
    """Every cluster hook's ``launched(pc, options)``, in the order of their names."""
    for name in CLUSTER_HOOKS.names():
        CLUSTER_HOOKS[name].launched(pc, options)


def queue_opened(queue: Any, cluster_or_client: Any) -> list[Any]:
    """Every queue hook's ``opened(queue, cluster_or_client)``: the attachments returned."""
    out = []
    for name in QUEUE_HOOKS.names():
        try:
            got = QUEUE_HOOKS[name].opened(queue, cluster_or_client)
        except Exception:
            log.warning("packlab: the queue hook %r failed; the queue runs without it", name, exc_info=True)
            continue
        if got is not None:
            out.append(got)
    return out


__all__ = ["CLUSTER_HOOKS", "QUEUE_HOOKS", "check_cluster_options", "cluster_launched", "queue_opened"]
