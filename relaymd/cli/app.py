"""The typer app: global options and every command and command group of `relaymd`.

Imported only when a command needs typer's parsing (everything except `--version` and a
plain `relaymd status`, see relaymd.cli.main.main). Heavy imports (pydantic models, boto3,
asyncssh, jinja2, openmm) happen inside the commands that need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from relaymd import __version__
from relaymd.cli import (
    cmd_clusters,
    cmd_config,
    cmd_daemon,
    cmd_demo,
    cmd_jobs,
    cmd_self_update,
    cmd_status,
    cmd_submit,
    cmd_views,
    cmd_workers,
)
from relaymd.cli.context import OPTIONS

HELP = """Relay long OpenMM simulations across short SLURM allocations, through checkpoints
in object storage.

\b
First time?   relaymd demo                  (a real job relayed on this machine)
Every day:    relaymd submit ./myjob ; relaymd status ; relaymd jobs list
Exit codes:   0 ok, 1 failed, 2 usage/config error, 3 cluster unreachable,
              4 not found, 5 not allowed in the current state, 130 interrupted
"""

app = typer.Typer(
    name="relaymd",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"relaymd {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="RELAYMD_CONFIG",
            help="Config file (default: $XDG_CONFIG_HOME/relaymd/config.yaml, else the "
            "embedded local default).",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks and debug logs on errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    OPTIONS.config_path = config
    OPTIONS.debug = debug


app.command("submit", no_args_is_help=True, help=cmd_submit.HELP)(cmd_submit.submit)
app.command("status")(cmd_status.status)
app.command("demo")(cmd_demo.demo)
app.command("report")(cmd_views.report)
app.command("dashboard")(cmd_views.dashboard)
app.add_typer(cmd_jobs.app, name="jobs")
app.add_typer(cmd_clusters.app, name="clusters")
app.add_typer(cmd_workers.app, name="workers")
app.add_typer(cmd_daemon.app, name="daemon")
app.add_typer(cmd_config.app, name="config")
app.command("self-update", help=cmd_self_update.HELP)(cmd_self_update.self_update)
