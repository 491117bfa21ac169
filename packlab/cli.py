"""The ``packlab`` command line. Thin: parse, call the API, print."""

from __future__ import annotations

import importlib
import signal
import sys
import threading

import click

from . import __version__
from .errors import PacklabError, PacklabRuntimeError
from .profiles import PROFILES


class _Group(click.Group):
    """Turn packlab's input errors into one readable line and exit code 2; load the
    subcommand groups that need heavy imports only when they are used."""

    _lazy = {"queue": ("packlab.queue.cli", "queue")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._lazy])

    def get_command(self, ctx: click.Context, name: str):
        if name in self._lazy:
            module, attr = self._lazy[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name, cmd, rest = super().resolve_command(ctx, args)
        if cmd is not None:  # remembered so an error can name the option as it was typed
            ctx.meta.setdefault("packlab.commands", []).append(cmd)
        return name, cmd, rest

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PacklabError as e:
            raise click.UsageError(as_typed(e, ctx.meta.get("packlab.commands", [])), ctx) from None
        except PacklabRuntimeError as e:
            raise click.ClickException(str(e)) from None


def as_typed(error: PacklabError, commands: list[click.Command]) -> str:
    """The error's message, naming the option as the user typed it (``--min-workers``)
    rather than the Python argument (``min_workers``) when the error is about one.

    Examples
    --------
    >>> cmd = click.Command("up", params=[click.Option(["--min-workers"], type=int)])
    >>> as_typed(PacklabError("min_workers=-1 is invalid: ...", field="min_workers"), [cmd])
    '--min-workers=-1 is invalid: ...'
    """
    message = str(error)
    if not error.field:
        return message
    stack = list(commands)
    while stack:
        cmd = stack.pop()
        if isinstance(cmd, click.Group):
            stack += list(cmd.commands.values())
        for param in cmd.params:
            if param.name == error.field and isinstance(param, click.Option):
                typed = max(param.opts, key=len)
                if message.startswith(f"{error.field}="):
                    return typed + message[len(error.field):]
                return message.replace(f"{error.field}=", f"{typed}=", 1).replace(
                    f"{error.field}", typed, 1)
    return message


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="packlab")
def main() -> None:
    """packlab: right-sized Dask clusters for pack compute."""


@main.command()
def profiles() -> None:
    """List the workload profiles (per-worker resources)."""
    for p in PROFILES.values():
        click.echo(f"{p.summary():<62}  {p.description}")


@main.group()
def cluster() -> None:
    """Start and stop clusters."""


@cluster.command("up")
@click.option("--backend", default=None, help="local (default) or slurm")
@click.option("--profile", default=None, help="workload profile (see `packlab profiles`)")
@click.option("--workers", type=int, default=None, help="fixed number of workers")
@click.option("--min-workers", type=int, default=None, help="adaptive minimum (0: scale to zero)")
@click.option("--max-workers", type=int, default=None, help="adaptive maximum")
@click.option("--cooldown", default=None, help='e.g. "60s"')
@click.option("--spot", is_flag=True, help="preemptible SLURM partition")
@click.option("--gpus", type=int, default=None)
@click.option("--walltime", default=None, help='e.g. "01:00:00"')
@click.option("--partition", default=None)
@click.option("--account", default=None)
@click.option("--insecure", is_flag=True, help="no TLS (not advised on shared machines)")
@click.option("--dashboard-address", default=None,
              help='where the dashboard listens (default 127.0.0.1:0, this machine only)')
def cluster_up(insecure: bool, **kwargs) -> None:
    """Start a cluster in the foreground; Ctrl-C or SIGTERM stops it cleanly."""
    from .clusters.launch import launch

    stop = threading.Event()

    def interrupt(*_):
        raise KeyboardInterrupt

    # Our own handlers, whatever this process inherited: started with SIGINT ignored
    # (nohup, `cmd &` in a script) Ctrl-C would otherwise do nothing.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    try:
        pc = launch(security=False if insecure else None, **kwargs)
    except KeyboardInterrupt:
        click.echo("interrupted while starting: nothing left running.", err=True)
        sys.exit(130)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with pc:
        click.echo(f"scheduler: {pc.scheduler_address}")
        click.echo(f"dashboard: {pc.dashboard_link}")
        click.echo(f"profile:   {pc.profile.summary()}")
        if pc.security is not None:
            click.echo("TLS on: connect with this process's certificates only.")
        click.echo("Ctrl-C to stop.", err=True)
        while not stop.wait(0.5):  # short waits: the handler runs between them
            pass
        click.echo("stopping cluster ...", err=True)
    click.echo("stopped.", err=True)


@main.command()
@click.option("--size", default="2GB", show_default=True, help="data volume, e.g. 8GB")
@click.option("--profile", default="analytics", show_default=True)
@click.option("--workers", type=int, default=None)
def demo(size: str, profile: str, workers: int | None) -> None:
    """Run the main job: a chunked reduction on a local cluster, checked against NumPy."""
    from . import demo as _demo

    r = _demo.run(size=size, profile=profile, workers=workers)
    click.echo(_demo.summary(r))
    if not r.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
