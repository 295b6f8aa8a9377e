"""The `relaymd` entry point: fast paths, logging level and error handling.

Start-up time is part of the interface (`relaymd status` is typed all day, and the
single-file binary unpacks itself on every start), so this module imports neither typer nor
rich nor pydantic. `--version` and a plain `relaymd [--debug] [-c FILE] status [--json]` run
without typer; everything else goes through the typer app in relaymd.cli.app.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from relaymd import __version__
from relaymd.cli.errors import CliError, ExitCode

if TYPE_CHECKING:
    from collections.abc import Sequence


@dataclass(frozen=True)
class PlainStatus:
    """A `relaymd status` call the fast path can run by itself, with its options."""

    config: Path | None
    debug: bool
    as_json: bool


def parse_plain_status(args: Sequence[str]) -> PlainStatus | None:
    """`[--debug] [--config FILE | -c FILE | --config=FILE] status [--json]`, parsed the way
    the typer app would; None for anything else (help, other options, shell completion), which
    then goes through typer, so the fast path never changes what a command means."""
    if "_RELAYMD_COMPLETE" in os.environ:
        return None
    config: str | None = None
    debug = False
    rest = list(args)
    while rest and rest[0] != "status":
        token = rest.pop(0)
        if token == "--debug":
            debug = True
        elif token in ("--config", "-c") and rest:
            config = rest.pop(0)
        elif token.startswith("--config="):
            config = token.partition("=")[2]
        else:
            return None
        if config is not None and (not config or config.startswith("-")):
            return None  # odd values: let click decide what they mean
    if not rest or any(token != "--json" for token in rest[1:]):
        return None
    if config is None:
        config = os.environ.get("RELAYMD_CONFIG") or None  # click ignores an empty envvar
    return PlainStatus(Path(config) if config else None, debug, len(rest) > 1)


def _run_plain_status(plain: PlainStatus) -> None:
    from relaymd.cli.context import OPTIONS
    from relaymd.cli.status_view import show_status

    OPTIONS.config_path = plain.config
    OPTIONS.debug = plain.debug
    try:
        show_status(plain.as_json)
    except KeyboardInterrupt:
        sys.exit(int(ExitCode.INTERRUPTED))  # as typer does: no message
    except BrokenPipeError:
        # `relaymd status | head`: as click does, exit 1 without a traceback at shutdown.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _run_typer() -> None:
    from relaymd.cli.app import app

    app()


def _configure_logging(debug: bool) -> None:
    # Logs go to stderr and stay quiet unless asked: the CLI's own output is the interface.
    # Only the level is set here; structlog itself is imported (slowly) by the modules that
    # log, so `relaymd status` never pays for it.
    if debug:
        os.environ["RELAYMD_LOG_LEVEL"] = "DEBUG"
    else:
        os.environ.setdefault("RELAYMD_LOG_LEVEL", "WARNING")


def _fail(message: str, hint: str | None, code: int) -> None:
    from rich.markup import escape

    from relaymd.cli.output import err_console, safe_text

    console = err_console()
    console.print(
        f"[bold red]error:[/] {escape(safe_text(message, multiline=True))}", soft_wrap=True
    )
    if hint:
        console.print(f"[yellow]hint:[/] {escape(safe_text(hint, multiline=True))}", soft_wrap=True)
    sys.exit(code)


def main() -> None:
    args = sys.argv[1:]
    if args in (["--version"], ["-V"]):  # fast path: no typer, no pydantic
        print(f"relaymd {__version__}")
        return
    debug = "--debug" in args
    from relaymd.envvars import EnvVarError, check_cli_environment

    try:
        check_cli_environment()
    except EnvVarError as exc:
        _fail(str(exc), "fix or unset the variable", int(ExitCode.USAGE))
    _configure_logging(debug)
    plain = parse_plain_status(args)
    try:
        if plain is not None:
            _run_plain_status(plain)
        else:
            _run_typer()
    except CliError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        _fail(exc.message, exc.hint, int(exc.code))
    except KeyboardInterrupt:
        _fail("interrupted", None, int(ExitCode.INTERRUPTED))
    except EnvVarError as exc:  # read where it is used (e.g. storage retry settings)
        _fail(str(exc), "fix or unset the variable", int(ExitCode.USAGE))
    except Exception as exc:
        if debug:
            raise
        if type(exc).__module__ == "sqlite3":  # the state file failed mid-command
            from relaymd.cli.context import state_failure

            failure = state_failure(exc)
            _fail(failure.message, failure.hint, int(ExitCode.FAILED))
        _fail(
            f"{type(exc).__name__}: {exc}",
            "rerun with --debug for the traceback, and report it if it looks like a bug",
            int(ExitCode.FAILED),
        )


if __name__ == "__main__":
    main()
