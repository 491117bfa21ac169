"""``packlab queue ...``: look at and fix a queue's store. Needs no cluster.

``requeue`` and ``cancel`` of a store that a live queue drives are sent to that queue
(it reads them within :data:`~.states.POLL` seconds and acts in its own loop); with no
live driver they change the store, for the next ``resume()``. No command waits on the
driver: the queue never holds the store's write lock for long.
"""

from __future__ import annotations

import datetime as _dt
import json
import socket
import time

import click

from .. import config
from ..errors import PacklabError
from ..files import pid_alive
from ..queue.job import check_cancellable, check_requeueable
from ..queue.jobstore import Store
from ..queue.lease import lease_timeout
from ..queue.states import STATUSES

_STORE = click.option("--store", default=None, help="the queue's SQLite store (default packlab.queue.store)")


def _open(store: str | None, mode: str = "ro") -> Store:
    # Never "rwc": a mistyped --store must be an error naming the path, not a new empty DB.
    return Store(config.get("queue.store") if store is None else store, mode=mode)


def _limit(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value < 1:
        raise click.BadParameter(f"--limit={value} is invalid: expected a whole number of at least 1 (how "
                                 "many jobs to list).", ctx, param)
    return value


@click.group("queue")
def queue() -> None:
    """Inspect a job queue's store: stats, list, requeue, cancel."""


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
@click.option("--limit", type=int, default=100, show_default=True, callback=_limit,
              help="list at most this many jobs (1 or more)")
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


def _live(s: Store) -> tuple | None:
    """The lease row of a live driver of this store, or None."""
    row = s.driver()
    if row is None:
        return None
    _, pid, host, _, beat = row
    if host == socket.gethostname() and not pid_alive(pid):
        return None
    return row if time.time() - beat <= lease_timeout() else None


def _act(store: str | None, job_id: str, action: str) -> None:
    s = _open(store, mode="rw")
    try:
        rows = s._query("SELECT status FROM jobs WHERE id=?", (job_id,))
        if not rows:
            raise PacklabError(f"job_id={job_id!r} does not exist in store {s.path}: list ids with "
                               "`packlab queue ls`.", field="job_id", value=job_id)
        (check_requeueable if action == "requeue" else check_cancellable)(job_id, rows[0][0])
        live = _live(s)
        if live is not None:
            s.request(job_id, action)
            click.echo(f"{job_id}: asked the queue driving {s.path} (pid {live[1]} on {live[2]}) to {action} "
                       "it; it acts within a second.")
        elif action == "requeue":
            s.requeue(job_id)
            click.echo(f"{job_id} requeued: it runs when a queue on {s.path} calls resume().")
        else:
            s.cancel(job_id)
            click.echo(f"{job_id} cancelled in {s.path} (no queue drives it now).")
    finally:
        s.close()


@queue.command("requeue")
@_STORE
@click.argument("job_id")
def requeue(store: str | None, job_id: str) -> None:
    """Give a dead/failed/cancelled job fresh attempts: at once if a queue drives the
    store, else when the next queue calls resume()."""
    _act(store, job_id, "requeue")


@queue.command("cancel")
@_STORE
@click.argument("job_id")
def cancel(store: str | None, job_id: str) -> None:
    """Cancel a queued, running or retrying job."""
    _act(store, job_id, "cancel")


__all__ = ["queue"]
