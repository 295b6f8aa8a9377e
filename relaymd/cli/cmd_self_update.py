"""`relaymd self-update [--version X] [--check] [--rollback]`: swap in a release binary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from relaymd.cli.errors import CliError, ExitCode

if TYPE_CHECKING:
    from relaymd.cli.updater import UpdateResult

HELP = """Update this relaymd binary to the newest release (or --version X), verified by SHA256.

\b
The old binary is kept beside the new one as `relaymd.old`; --rollback swaps them back.
Releases come from GitHub's releases API; set RELAYMD_RELEASES_URL (or --releases-url)
for a mirror or a fork.

\b
Examples:
  relaymd self-update --check          # is there a newer release?
  relaymd self-update                  # install it
  relaymd self-update --version 0.3.1  # install exactly that release (also older ones)
  relaymd self-update --rollback       # back to the binary before the last update
"""


def _running_binary() -> Path:
    if not getattr(sys, "frozen", False):
        raise CliError(
            "self-update replaces the relaymd binary, but this relaymd runs from Python "
            f"source ({sys.executable})",
            hint="update a source checkout with git and `uv sync`; or name an installed "
            "binary with --binary PATH",
            code=ExitCode.USAGE,
        )
    return Path(sys.executable).resolve()


def self_update(
    version: Annotated[
        str | None,
        typer.Option("--version", help="Install this release (e.g. 0.3.1) instead of the newest."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only tell whether a newer release exists.")
    ] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Swap back to the binary kept by the last update.")
    ] = False,
    binary: Annotated[
        Path | None,
        typer.Option(
            "--binary",
            help="The installed relaymd binary to update (default: the running one).",
            show_default=False,
        ),
    ] = None,
    releases_url: Annotated[
        str | None,
        typer.Option(
            "--releases-url",
            envvar="RELAYMD_RELEASES_URL",
            help="GitHub-style releases API URL (default: the project's GitHub releases).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    from relaymd.cli import updater
    from relaymd.cli.output import transfer_progress

    if rollback and (check or version):
        raise CliError("--rollback takes no --check or --version", code=ExitCode.USAGE)
    target = binary.resolve() if binary is not None else _running_binary()
    if not target.is_file():
        raise CliError(f"{target} is not a file", code=ExitCode.NOT_FOUND)
    try:
        if rollback:
            _load_output_code()
            result = updater.rollback(target)
        else:
            with transfer_progress(enabled=not as_json and sys.stderr.isatty()) as bar:
                task = bar.add_task(updater.platform_asset_name(), total=None)
                staged = updater.prepare_update(
                    target,
                    base_url=updater.releases_url(releases_url),
                    version=version,
                    check_only=check,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                )
            _load_output_code()
            result = updater.finish_update(staged)
    except updater.SelfUpdateError as exc:
        raise CliError(exc.message, hint=exc.hint) from None
    _report(result, target, as_json)


def _load_output_code() -> None:
    """Import now whatever printing the result or an error needs: once the running binary's
    file is swapped, a onefile binary can no longer import from its own archive."""
    import json  # noqa: F401  (print_json)

    from relaymd.cli.output import err_console, to_jsonable
    from relaymd.cli.updater import UpdateResult

    err_console().render_str("[yellow]hint:[/] [red]error:[/] loaded")  # app._fail's markup
    to_jsonable(UpdateResult(action="-", binary=Path("/"), current_version=None, backup=Path()))


def _report(result: UpdateResult, target: Path, as_json: bool) -> None:
    from relaymd.cli.output import print_json

    if as_json:
        print_json(result)
        return
    messages = {
        "up-to-date": f"{target} is up to date (relaymd {result.current_version})",
        "available": f"relaymd {result.new_version} is available (this is "
        f"{result.current_version}); run `relaymd self-update`",
        "updated": f"updated {target}: {result.current_version} -> {result.new_version} "
        f"(sha256 {result.sha256}); the old binary is {result.backup}",
        "rolled-back": f"rolled back {target}: {result.current_version} -> "
        f"{result.new_version}; {result.backup} now holds {result.current_version}",
    }
    # Plain stdout, not rich: see _load_output_code.
    sys.stdout.write(messages[result.action] + "\n")
    sys.stdout.flush()
