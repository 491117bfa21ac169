"""packlab's metrics on the scheduler's own Prometheus endpoint (``/metrics`` of the
dashboard), not on a server of its own.

distributed serves ``prometheus_client``'s global registry there when that package is
installed; the plugin and the queue's recorder register a collector on it (in the
scheduler's process: for packlab's local and SLURM clusters, the driver's). Without
``prometheus_client`` nothing is registered and ``/metrics`` says it is missing, as
distributed does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable

log = logging.getLogger("packlab.telemetry")

#: (name, help, label names, {label values: value})
Family = tuple[str, str, tuple[str, ...], dict[tuple[str, ...], float]]


def register(families: Callable[[], Iterable[Family]]) -> object | None:
    """Register a collector that yields ``families()`` as gauges; the handle for
    :func:`unregister`, or ``None`` without ``prometheus_client``."""
    try:
        from prometheus_client import REGISTRY
        from prometheus_client.core import GaugeMetricFamily
    except ImportError:
        return None

    class _Collector:
        def collect(self):
            try:
                fams = list(families())
            except Exception:  # a scrape must not fail because telemetry did
                log.debug("packlab telemetry: a metrics scrape failed", exc_info=True)
                return
            for name, doc, labels, values in fams:
                g = GaugeMetricFamily(name, doc, labels=list(labels))
                for key, value in values.items():
                    g.add_metric(list(key), value)
                yield g

        def describe(self):  # no description at registration: collect() runs only on a scrape
            return []

    c = _Collector()
    try:
        REGISTRY.register(c)
    except ValueError:  # a name already registered (another cluster in this process)
        return None
    return c


def unregister(handle: object | None) -> None:
    """Remove a collector :func:`register` returned (``None``: nothing to do)."""
    if handle is None:
        return
    from prometheus_client import REGISTRY

    with contextlib.suppress(KeyError):
        REGISTRY.unregister(handle)


__all__ = ["Family", "register", "unregister"]
