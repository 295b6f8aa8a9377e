"""The `relaymd` command: wiring, global options and error handling.

Heavy imports (pydantic models, boto3, asyncssh, jinja2, openmm) happen inside the commands
that need them; this module and the command modules import only typer.
"""

from __future__ import annotations

import sys
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
    cmd_status,
    cmd_submit,
    cmd_workers,
)
from relaymd.cli.context import OPTIONS
from relaymd.cli.errors import CliError, ExitCode

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
app.add_typer(cmd_jobs.app, name="jobs")
app.add_typer(cmd_clusters.app, name="clusters")
app.add_typer(cmd_workers.app, name="workers")
app.add_typer(cmd_daemon.app, name="daemon")
app.add_typer(cmd_config.app, name="config")


def _configure_logging(debug: bool) -> None:
    # Logs go to stderr and stay quiet unless asked: the CLI's own output is the interface.
    # Only the level is set here; structlog itself is imported (slowly) by the modules that
    # log, so `relaymd status` never pays for it.
    import os

    if debug:
        os.environ["RELAYMD_LOG_LEVEL"] = "DEBUG"
    else:
        os.environ.setdefault("RELAYMD_LOG_LEVEL", "WARNING")


def _fail(message: str, hint: str | None, code: int) -> None:
    from rich.markup import escape

    from relaymd.cli.output import err_console

    console = err_console()
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    if hint:
        console.print(f"[yellow]hint:[/] {escape(hint)}", soft_wrap=True)
    sys.exit(code)


def main() -> None:
    args = sys.argv[1:]
    if args in (["--version"], ["-V"]):  # fast path: no typer, no pydantic
        print(f"relaymd {__version__}")
        return
    debug = "--debug" in args
    _configure_logging(debug)
    try:
        app()
    except CliError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        _fail(exc.message, exc.hint, int(exc.code))
    except KeyboardInterrupt:
        _fail("interrupted", None, int(ExitCode.INTERRUPTED))
    except Exception as exc:
        if debug:
            raise
        _fail(
            f"{type(exc).__name__}: {exc}",
            "rerun with --debug for the traceback, and report it if it looks like a bug",
            int(ExitCode.FAILED),
        )


if __name__ == "__main__":
    main()
