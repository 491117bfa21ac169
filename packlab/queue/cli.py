"""``packlab queue ...``: look at and fix a queue's store. Needs no cluster."""

from __future__ import annotations

import datetime as _dt
import json

import click

from .. import config
from .job import STATUSES
from .store import Store

_STORE = click.option("--store", default=None, help="the queue's SQLite store (default packlab.queue.store)")


def _open(store: str | None, mode: str = "ro") -> Store:
    # Never "rwc": a mistyped --store must be an error naming the path, not a new empty DB.
    return Store(config.get("queue.store") if store is None else store, mode=mode)


@click.group("queue")
def queue() -> None:
    """Inspect a job queue's store: stats, list, requeue."""


@queue.command("stats")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def stats(store: str | None, as_json: bool) -> None:
    """Jobs per status."""
    s = _open(store)
    try:
        counts = s.counts()
    finally:
        s.close()
    if as_json:
        click.echo(json.dumps({"store": s.path, "counts": counts}))
        return
    click.echo(f"store: {s.path}")
    for st in STATUSES:
        click.echo(f"  {st:<10} {counts.get(st, 0)}")
    click.echo(f"  {'total':<10} {sum(counts.values())}")


@queue.command("ls")
@_STORE
@click.option("--status", type=click.Choice(STATUSES), default=None, help="only jobs of this status")
@click.option("--limit", type=int, default=100, show_default=True)
def ls(store: str | None, status: str | None, limit: int) -> None:
    """List jobs: id, status, attempts, owner, function, last error."""
    s = _open(store)
    try:  # only the shown columns: no result or Retry is unpickled (their classes may not import)
        rows = s.listing(status=status, limit=limit)
    finally:
        s.close()
    for jid, st, late, attempts, owner, submitted, fn, error in rows:
        when = _dt.datetime.fromtimestamp(submitted or 0).strftime("%Y-%m-%d %H:%M:%S")
        err = f"  {error}" if error and st != "done" else ""
        click.echo(f"{jid}  {st:<9}{' late' if late else ''} attempts={attempts}  owner={owner}  {when}  "
                   f"{fn}{err}")


@queue.command("requeue")
@_STORE
@click.argument("job_id")
def requeue(store: str | None, job_id: str) -> None:
    """Mark a dead/failed/cancelled job queued again; the next resume() runs it."""
    s = _open(store, mode="rw")
    try:
        s.requeue(job_id)
    finally:
        s.close()
    click.echo(f"{job_id} requeued: it runs when a queue on {s.path} calls resume().")
