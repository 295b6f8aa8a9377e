"""`relaymd config show|validate|init`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from relaymd.cli.errors import CliError, ExitCode

app = typer.Typer(
    help="Show, check or create the operator config.\n\n"
    "\b\nExamples:\n  relaymd config init\n  relaymd config validate\n"
    "  relaymd --config ~/relaymd.yaml config show --json",
    no_args_is_help=True,
)


@app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Print the effective config (profiles resolved) and where it came from.

    \b
    Examples:
      relaymd config show
      relaymd --config ~/relaymd.yaml config show
      relaymd config show --json | jq '.config.storage'
    """
    import yaml

    from relaymd.cli import context
    from relaymd.cli.output import print_json

    loaded = context.load()
    source = str(loaded.source) if loaded.source else "embedded default (no config file)"
    data = loaded.config.model_dump(mode="json", exclude_none=True)
    if as_json:
        print_json({"source": source, "config": data})
        return
    print(f"# source: {source}")
    print(yaml.safe_dump(data, sort_keys=False), end="")


@app.command("validate")
def validate(
    path: Annotated[
        Path | None,
        typer.Argument(help="File to check (default: the config in use).", show_default=False),
    ] = None,
) -> None:
    """Check a config file: prints OK, or the file, field and problem (exit 2).

    \b
    Examples:
      relaymd config validate
      relaymd config validate ~/relaymd-new.yaml
    """
    from relaymd.cli import context

    if path is not None:
        context.OPTIONS.config_path = path
    loaded = context.load()
    where = loaded.source or "embedded default (no config file)"
    names = ", ".join(c.name for c in loaded.clusters)
    print(f"OK: {where} (clusters: {names}; storage: {loaded.config.storage.url})")


@app.command("init")
def init(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Where to write (default: $XDG_CONFIG_HOME/relaymd/config.yaml).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config (local cluster + file:// storage) to edit.

    \b
    Examples:
      relaymd config init
      relaymd config init ./relaymd.yaml && relaymd --config ./relaymd.yaml config validate
      relaymd config init --force      # replace the existing file
    """
    import json

    from relaymd import paths
    from relaymd.cli.starter_config import STARTER_CONFIG
    from relaymd.executables import local_worker_command

    target = (path or paths.config_file()).expanduser()
    if target.exists() and not force:
        raise CliError(
            f"{target}: already exists; not overwriting",
            hint="use --force to replace it, or edit it and run `relaymd config validate`",
            code=ExitCode.CONFLICT,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # JSON is YAML: the argv list stays a list, whatever its paths contain.
    text = STARTER_CONFIG.format(
        data_dir=paths.data_dir(), worker=json.dumps(local_worker_command())
    )
    target.write_text(text)
    print(f"wrote {target}")
    print("next: edit it, then `relaymd config validate`")
