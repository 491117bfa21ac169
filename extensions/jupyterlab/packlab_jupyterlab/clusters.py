"""Clusters started from JupyterLab, run by the Jupyter server process, and what the
sidebar shows of every running cluster and recent store of this user."""

from __future__ import annotations

import asyncio
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from packlab.clusters import registry
from packlab.clusters.base import PackCluster
from packlab.errors import PacklabError, bad_value
from packlab.ui.document import queue_summary, read_counts
from packlab.ui.forms import launch_arguments

#: What the New cluster form may send: everything else is refused, not passed on.
FORM_FIELDS = ("name", "backend", "profile", "min_workers", "max_workers")


def form_arguments(body: object) -> dict[str, Any]:
    """:func:`packlab.launch` keywords from the New cluster form's JSON body.

    Examples
    --------
    >>> form_arguments({"backend": "local", "profile": "analytics", "min_workers": 0, "max_workers": 2})
    {'backend': 'local', 'profile': 'analytics', 'min_workers': 0, 'max_workers': 2}
    >>> form_arguments({"name": "a", "min_workers": 1, "max_workers": 1})
    {'workers': 1, 'name': 'a'}
    """
    if not isinstance(body, dict):
        raise bad_value("body", body, "a JSON object of the form's fields", f"send some of {FORM_FIELDS}.")
    unknown = sorted(set(body) - set(FORM_FIELDS))
    if unknown:
        raise bad_value(unknown[0], body[unknown[0]], f"one of the form's fields {list(FORM_FIELDS)}",
                        "Set other launch() keywords in Python or in packlab's dask config.")
    args = launch_arguments(body)
    if body.get("name"):
        args["name"] = registry.check_name(body["name"])
    return args


class NotStartedHere(PacklabError):
    """The cluster runs, but another process started it: only that one may stop it."""


class Clusters:
    """The clusters this server started (it may stop only those), and listings."""

    def __init__(self) -> None:
        self.running: dict[str, PackCluster] = {}
        # launch() blocks (it starts processes and waits for workers): never on the loop.
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="packlab-launch")

    async def start(self, body: object) -> dict[str, Any]:
        from packlab.clusters.launch import launch

        args = form_arguments(body)

        def run() -> tuple[PackCluster, list[str]]:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                pc = launch(**args)
            return pc, [str(w.message) for w in seen]

        pc, notes = await asyncio.get_running_loop().run_in_executor(self._pool, run)
        self.running[pc.name] = pc
        return {"name": pc.name, "scheduler": pc.scheduler_address, "notes": notes,
                "connect": connect_snippet(pc.name)}

    async def stop(self, name: str) -> None:
        pc = self.running.get(name)
        if pc is None:
            entry = registry.lookup(name)  # unknown: an error listing the running ones
            raise NotStartedHere(f"cluster {name!r} was started by pid {entry.pid} on {entry.host}, not by "
                               "this Jupyter server: close it where it runs (pc.close()).",
                               field="name", value=name)
        await asyncio.get_running_loop().run_in_executor(self._pool, pc.close)
        self.running.pop(name, None)

    def close(self) -> None:
        for pc in list(self.running.values()):
            try:
                pc.close()
            except Exception:  # shutting down: close the others all the same
                pass
        self.running.clear()
        self._pool.shutdown(wait=False)

    async def listing(self) -> list[dict[str, Any]]:
        """Every running cluster of this user (the registry), with its workers and queue."""
        entries = registry.entries()
        workers = await asyncio.gather(*(self._workers(e) for e in entries))
        rows = []
        for e, n in zip(entries, workers, strict=True):
            row = {"name": e.name, "backend": e.backend, "profile": e.profile, "scheduler": e.scheduler,
                   "dashboard": e.dashboard, "tls": e.tls is not None, "pid": e.pid, "host": e.host,
                   "started": e.started, "store": e.store, "workers": n, "here": e.name in self.running,
                   "connect": connect_snippet(e.name)}
            row.update(_queue(e.store))
            if row["cost"] is None:  # no queue took its telemetry over: its own store has it
                row["cost"] = _cost(e.telemetry)
            rows.append(row)
        return rows

    async def _workers(self, e: registry.Entry) -> int | None:
        pc = self.running.get(e.name)
        if pc is not None:
            return pc.workers
        return await scheduler_workers(e)

    def stores(self, clusters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Recent stores, with the queue and the workers of the cluster that uses one."""
        by_store = {c["store"]: c for c in clusters if c["store"]}
        rows = []
        for r in registry.recent_stores():
            c = by_store.get(r["path"])
            rows.append({"path": r["path"], "name": os.path.basename(r["path"]), "used": r["used"],
                         "cluster": c["name"] if c else None, "workers": c["workers"] if c else 0,
                         **_queue(r["path"])})
        return rows


def _queue(store: str | None) -> dict[str, Any]:
    """A store's queue (depth, done, running, failed) and its cost so far (``cost``: e.g.
    ``"0.1234 USD"``, from the telemetry the cluster wrote there; ``None`` without it)."""
    counts = read_counts(store) if store else None
    cost = _cost(store)
    if counts is None:
        return {"depth": None, "done": None, "cost": cost}
    s = queue_summary(counts)
    return {"depth": s["depth"], "done": s["done"], "running": s["running"], "failed": s["failed"],
            "cost": cost}


def _cost(store: str | None) -> str | None:
    if not store or not os.path.exists(store):
        return None
    import packlab

    try:  # one open: a store without telemetry is refused by monitor() itself
        m = packlab.monitor(store)
        cost = m.cost()
        # a no-break space: the sidebar never splits "0.0012 USD"; cents hide small runs
        amount = f"{cost:,.2f}" if cost >= 1 else f"{cost:.4f}"
        return f"{amount}\u00a0{m.pricing.currency}"
    except Exception:  # a store being written, or gone meanwhile: no figure this time
        return None


async def scheduler_workers(e: registry.Entry, timeout: float = 3.0) -> int | None:
    """Workers of the scheduler of ``e`` (one short identity call), or ``None`` if it
    does not answer."""
    from distributed import Security
    from distributed.core import rpc

    args: dict[str, Any] = {}
    if e.tls is not None:
        sec = Security(tls_ca_file=e.tls.get("ca"), tls_client_cert=e.tls.get("cert"),
                       tls_client_key=e.tls.get("key"), require_encryption=True)
        args = sec.get_connection_args("client")
    r = rpc(e.scheduler, connection_args=args, timeout=timeout)
    try:
        ident = await asyncio.wait_for(r.identity(), timeout)
        return len(ident.get("workers", {}))
    except (OSError, asyncio.TimeoutError, ValueError):
        return None
    finally:
        await r.close_rpc()


def connect_snippet(name: str) -> str:
    """The two lines that connect a notebook to the cluster ``name``.

    Examples
    --------
    >>> print(connect_snippet("brisk-otter"))
    import packlab
    client = packlab.connect("brisk-otter")
    """
    return f'import packlab\nclient = packlab.connect("{name}")'
