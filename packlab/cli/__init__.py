"""The ``packlab`` command line. Thin: parse, call the API, print."""

from __future__ import annotations

import importlib
import re
import signal
import sys
import threading

import click

from .. import __version__
from ..errors import ConfigError, PacklabError, PacklabRuntimeError
from ..plugins import entry_point_names


class _Text(click.ParamType):
    """A string option that refuses an empty value: ``--backend ""`` is a mistake, not "the
    default" (leave the option out for that)."""

    name = "text"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail(f"{value!r} is empty: give a value, or leave the option out for the default.",
                      param, ctx)
        return value


TEXT = _Text()


class _InputError(click.ClickException):
    """A bad setting, not a bad command line: one line, exit code 2, no usage text."""

    exit_code = 2


class _Group(click.Group):
    """Turn packlab's input errors into one readable line and exit code 2; load the
    subcommand groups that need heavy imports only when they are used."""

    _lazy = {"queue": ("packlab.cli.queue", "queue")}

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
            ctx.meta.setdefault("packlab.args", []).extend(rest)
        return name, cmd, rest

    def invoke(self, ctx: click.Context):
        try:
            from .. import config  # noqa: F401  (first: an unreadable dask config file is one line)

            return super().invoke(ctx)
        except ConfigError as e:
            raise _InputError(str(e)) from None
        except PacklabError as e:
            raise click.UsageError(as_typed(e, ctx.meta.get("packlab.commands", []),
                                            ctx.meta.get("packlab.args")), ctx) from None
        except PacklabRuntimeError as e:
            raise click.ClickException(str(e)) from None


def as_typed(error: PacklabError, commands: list[click.Command], args: list[str] | None = None) -> str:
    """The error's message, naming each option as a command-line user knows it
    (``--min-workers``) rather than as the Python argument (``min_workers``).

    Every option of the commands run that the message mentions is renamed: as ``name=``
    (``min_workers=3``, ``backend='slurm'``), and, for a name with an underscore, also
    alone (``set min_workers <= max_workers``). ``args`` is accepted for compatibility.

    Examples
    --------
    >>> cmd = click.Command("up", params=[click.Option(["--min-workers"], type=int),
    ...                                   click.Option(["--max-workers"], type=int)])
    >>> as_typed(PacklabError("min_workers=-1 is invalid: ...", field="min_workers"), [cmd])
    '--min-workers=-1 is invalid: ...'
    >>> as_typed(PacklabError("min_workers=3 is greater than max_workers=1: "
    ...                       "set min_workers <= max_workers."), [cmd])
    '--min-workers=3 is greater than --max-workers=1: set --min-workers <= --max-workers.'
    """
    message = str(error)
    typed: dict[str, str] = {}
    stack = list(commands)
    while stack:
        cmd = stack.pop()
        if isinstance(cmd, click.Group):
            stack += list(cmd.commands.values())
        for param in cmd.params:
            if isinstance(param, click.Argument) and param.name == error.field:
                typed.setdefault(param.name, param.human_readable_name)  # JOB_ID
            if isinstance(param, click.Option) and param.name:
                typed.setdefault(param.name, max(param.opts, key=len))
    if not typed:
        return message
    names = "|".join(re.escape(n) for n in sorted(typed, key=len, reverse=True))
    # not inside a dotted setting name (packlab.profile=...), a longer word (max_workers_x=),
    # an option already (--workers=) or a Python call (pc.scale(n))
    def rename(m: re.Match) -> str:
        name, after = m.group(1), m.group(2)
        return typed[name] if after == "=" or "_" in name else name

    return re.sub(rf"(?<![\w.-])({names})(=|(?![\w(-]))", lambda m: rename(m) + m.group(2), message)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="packlab")
def main() -> None:
    """packlab: right-sized Dask clusters for pack compute."""


@main.command()
def profiles() -> None:
    """List the workload profiles (per-worker resources)."""
    from ..profiles import PROFILES  # here: an unreadable dask config is then one line

    for p in PROFILES.values():
        click.echo(f"{p.summary():<62}  {p.description}")


@main.group()
def cluster() -> None:
    """Start and stop clusters."""


@cluster.command("up")
@click.option("--backend", type=TEXT, default=None,
              help="where workers run: " + (", ".join(sorted(entry_point_names("packlab.backends")))
                                            or "a registered backend")
              + " (default: the packlab.backend setting)")
@click.option("--profile", type=TEXT, default=None, help="workload profile (see `packlab profiles`)")
@click.option("--workers", type=int, default=None, help="fixed number of workers")
@click.option("--min-workers", type=int, default=None, help="adaptive minimum (0: scale to zero)")
@click.option("--max-workers", type=int, default=None, help="adaptive maximum")
@click.option("--cooldown", type=TEXT, default=None, help='e.g. "60s"')
@click.option("--spot", is_flag=True, help="preemptible SLURM partition")
@click.option("--gpus", type=int, default=None)
@click.option("--walltime", type=TEXT, default=None, help='e.g. "01:00:00"')
@click.option("--partition", type=TEXT, default=None)
@click.option("--account", type=TEXT, default=None)
@click.option("--insecure", is_flag=True, help="no TLS (not advised on shared machines)")
@click.option("--dashboard-address", default=None,
              help='where the dashboard listens (default 127.0.0.1:0, this machine only)')
@click.option("--name", type=TEXT, default=None,
              help="its name for packlab.connect(NAME) (default: generated, e.g. brisk-otter)")
def cluster_up(insecure: bool, **kwargs) -> None:
    """Start a cluster in the foreground; Ctrl-C or SIGTERM stops it cleanly."""
    from ..clusters.launch import launch

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
        click.echo(f"name:      {pc.name}")
        click.echo(f"scheduler: {pc.scheduler_address}")
        click.echo(f"dashboard: {pc.dashboard_link}")
        click.echo(f"profile:   {pc.profile.summary()}")
        if pc.security is not None:
            click.echo("TLS on: only your processes connect (certificates in ~/.packlab, 0600).")
        click.echo(f'connect:   import packlab; client = packlab.connect("{pc.name}")')
        click.echo("Ctrl-C to stop.", err=True)
        while not stop.wait(0.5):  # short waits: the handler runs between them
            pass
        click.echo("stopping cluster ...", err=True)
    click.echo("stopped.", err=True)


@main.command()
@click.option("--size", type=TEXT, default="2GB", show_default=True, help="data volume, e.g. 8GB")
@click.option("--profile", type=TEXT, default="analytics", show_default=True)
@click.option("--workers", type=int, default=None)
@click.option("--out", type=TEXT, default="packlab-demo", show_default=True,
              help="folder for the store (packlab.db) and report.html")
def demo(size: str, profile: str, workers: int | None, out: str) -> None:
    """The whole pack: a local cluster from a profile, a JobQueue batch (fair share, retry,
    dead letters), a kernel map-reduce checked against NumPy, then the five metrics, the
    cost, the advisor's findings and an offline report.html."""
    from .. import demo as _demo

    r = _demo.run(size=size, profile=profile, workers=workers, out=out)
    click.echo(_demo.summary(r))
    if not r.ok:
        sys.exit(1)


def _output(path: str | None) -> str | None:
    """``-o``'s file, checked before anything is read: a path in an existing folder."""
    import os

    from .. import checks

    if path is None:
        return None
    path = checks.path(path, "output")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or os.path.isdir(path):
        raise PacklabError(f"output={path!r} is invalid: expected a file path in an existing folder, "
                           "e.g. -o report.html.", field="output", value=path)
    return path


@main.command()
@click.option("--store", type=TEXT, required=True, help="SQLite store with telemetry, e.g. packlab.db")
@click.option("-o", "--output", type=TEXT, default=None, help="also write an HTML report to this file")
def report(store: str, output: str | None) -> None:
    """The five metrics, cost with its idle share, and the top findings of a store; with
    -o, also the panel's plots as one self-contained HTML file (viewable offline)."""
    from ..telemetry import textreport as _report
    from ..telemetry.monitor import monitor
    from ..telemetry.summary import advise

    output = _output(output)
    m = monitor(store)
    snap, findings = m.snapshot(), advise(m)
    click.echo(_report.text(snap, findings))
    if output is not None:
        from ..ui import report as _page

        _page.write(m, output, title=f"packlab report: {store}")
        click.echo(f"\nwrote {output}")


@main.command()
@click.option("--store", type=TEXT, required=True, help="SQLite store with telemetry, e.g. packlab.db")
@click.option("--port", type=int, default=8790, show_default=True)
@click.option("--address", type=TEXT, default="127.0.0.1", show_default=True,
              help="address to bind; anything but loopback requires a token")
@click.option("--token", type=TEXT, default=None, help="token to require (default: generated when needed)")
def dashboard(store: str, port: int, address: str, token: str | None) -> None:
    """Serve the live panel of a store at http://ADDRESS:PORT/ until Ctrl-C."""
    from ..ui.dashboard import serve

    d = serve(store, port=port, address=address, token=token)
    click.echo(f"packlab dashboard: {d.url}", err=False)
    if d.token is not None:
        click.echo("(the token is required: share this URL only with those who may see the run)", err=True)
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: d.server.io_loop.add_callback_from_signal(d.server.io_loop.stop))
    try:
        d.server.io_loop.start()
    except KeyboardInterrupt:
        pass
    click.echo("stopped.", err=True)


@main.command()
@click.option("--store", type=TEXT, required=True, help="SQLite store with telemetry, e.g. packlab.db")
def advise(store: str) -> None:
    """Every finding of the advisor for a store: the evidence and a line to paste."""
    from ..telemetry import textreport as _report
    from ..telemetry.summary import advise as _advise

    findings = _advise(store)
    click.echo(_report.findings_text(findings, top=None))
    for f in findings:
        evidence = ", ".join(f"{k}={v:g}" for k, v in f.evidence.items())
        click.echo(f"    evidence ({f.name}): {evidence}")
