"""`relaymd submit DIR...`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from relaymd.cli.errors import CliError, ExitCode

if TYPE_CHECKING:
    from relaymd.config import LoadedConfig
    from relaymd.submission.errors import SubmitError
    from relaymd.submission.prepare import PreparedJob
    from relaymd.submission.spec import SpecOverrides
    from relaymd.submission.submit import SubmitResult

HELP = """Submit job directories: validate, pack, upload, verify, then register.

The job spec comes from DIR/relaymd.yaml (a JobSpec, see docs/configuration.md) and/or flags;
flags win. Nothing is registered unless its bundle was uploaded and read back with the right
sha256; a failed submit leaves no job and no uploaded object.

\b
Examples:
  relaymd submit ./abl1-complex                      # uses ./abl1-complex/relaymd.yaml
  relaymd submit ./run --engine openmm --steps 5000000 --cluster clusterA --cluster clusterB
  relaymd submit ./atom --engine command --command "python rbfe.py" --checkpoint-glob "*.xml"
  relaymd submit lig1/ lig2/ lig3/ --priority 10     # uploads in parallel
  relaymd submit ./run --dry-run --json              # validate and show the spec only
"""


def submit(
    directories: Annotated[
        list[Path], typer.Argument(help="Job input directories.", show_default=False)
    ],
    engine: Annotated[
        str | None, typer.Option(help="Engine: openmm or command.", show_default=False)
    ] = None,
    command: Annotated[
        str | None,
        typer.Option(help="Command line for --engine command (shell-quoted).", show_default=False),
    ] = None,
    checkpoint_glob: Annotated[
        list[str] | None,
        typer.Option("--checkpoint-glob", help="Checkpoint files of a command job (repeatable)."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option(help="Total MD steps (openmm).", show_default=False)
    ] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs per job.", show_default=False)] = None,
    min_vram: Annotated[
        float | None, typer.Option(help="Minimum GPU memory in GiB.", show_default=False)
    ] = None,
    cluster: Annotated[
        list[str] | None,
        typer.Option("--cluster", help="Allowed cluster (repeatable; default: any)."),
    ] = None,
    title: Annotated[
        str | None,
        typer.Option(help="Job title (default: the directory name).", show_default=False),
    ] = None,
    priority: Annotated[
        int | None, typer.Option(help="Higher runs first.", show_default=False)
    ] = None,
    max_retries: Annotated[
        int | None,
        typer.Option(help="Application failures retried before the job fails.", show_default=False),
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="Worker image profile (e.g. openmm).", show_default=False)
    ] = None,
    follow_external_links: Annotated[
        bool,
        typer.Option(
            "--follow-external-links",
            help="Pack what symlinks pointing outside the directory lead to (with a warning); "
            "by default they are refused.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate only; upload nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    from relaymd.cli import context
    from relaymd.submission.errors import SubmitInterrupted
    from relaymd.submission.spec import SpecOverrides

    if engine is not None and engine not in ("openmm", "command"):
        raise CliError(
            f"--engine: unknown engine {engine!r}",
            hint="use openmm or command",
            code=ExitCode.USAGE,
        )
    flags = SpecOverrides(
        engine=engine,
        command=command,
        checkpoint_globs=checkpoint_glob or [],
        steps=steps,
        gpus=gpus,
        min_vram_gib=min_vram,
        clusters=cluster or [],
        title=title,
        priority=priority,
        max_retries=max_retries,
        image=image,
    )
    prepared = _prepare_all(directories, context.load(), flags, follow_external_links)
    _print_warnings(prepared)
    if dry_run:
        _print_dry_run(prepared, as_json)
        return
    try:
        outcomes = _upload_and_register(prepared, show_progress=not as_json)
    except SubmitInterrupted as exc:
        raise CliError(
            str(exc),
            hint="nothing else was registered and no partial upload was left in storage",
            code=ExitCode.INTERRUPTED,
        ) from None
    _report(outcomes, as_json)


def _prepare_all(
    directories: list[Path],
    loaded: LoadedConfig,
    flags: SpecOverrides,
    follow_external_links: bool,
) -> list[PreparedJob]:
    """Every directory validated before anything is uploaded; the first problem stops all."""
    from relaymd.submission.errors import SubmitError
    from relaymd.submission.prepare import prepare

    prepared: list[PreparedJob] = []
    for directory in directories:
        try:
            prepared.append(
                prepare(directory, loaded, flags, follow_external_links=follow_external_links)
            )
        except SubmitError as exc:
            code = ExitCode.NOT_FOUND if exc.kind == "missing" else ExitCode.USAGE
            raise CliError(str(exc), hint="nothing was uploaded or registered", code=code) from None
    return prepared


def _print_warnings(prepared: list[PreparedJob]) -> None:
    """What the user should know before the upload: loose outputs, followed links, ignores."""
    from rich.markup import escape

    from relaymd.cli.output import err_console

    for job in prepared:
        for warning in job.warnings:
            err_console().print(
                f"[yellow]warning:[/] {escape(str(job.directory))}: {escape(warning)}",
                soft_wrap=True,
            )
        for link in job.external_links:
            err_console().print(
                f"[yellow]warning:[/] {escape(str(link.link))} points outside "
                f"{escape(str(job.directory))}: packing {escape(str(link.target))}",
                soft_wrap=True,
            )
        if job.left_out:
            shown = ", ".join(job.left_out[:10]) + (" ..." if len(job.left_out) > 10 else "")
            err_console().print(
                f"{job.directory}: .relaymdignore leaves out {len(job.left_out)}: {shown}",
                soft_wrap=True,
                markup=False,
            )


def _print_dry_run(prepared: list[PreparedJob], as_json: bool) -> None:
    from rich.markup import escape

    from relaymd.cli.output import console, print_json

    if as_json:
        print_json(
            [
                {"directory": str(p.directory), "spec": p.spec, "left_out": p.left_out}
                for p in prepared
            ]
        )
        return
    for job in prepared:
        console().print(
            f"ok (dry run): {escape(str(job.directory))} -> {escape(repr(job.spec.title))}"
        )


def _report(outcomes: list[SubmitResult | SubmitError], as_json: bool) -> None:
    """Print what was submitted and what failed; exit 1 when anything failed."""
    from rich.markup import escape

    from relaymd.cli.output import console, err_console, print_json, safe_text
    from relaymd.submission.errors import SubmitError

    failures = [o for o in outcomes if isinstance(o, SubmitError)]
    done = [o for o in outcomes if not isinstance(o, SubmitError)]
    if as_json:
        print_json({"submitted": done, "failed": [str(f) for f in failures]})
    else:
        for result in done:
            console().print(
                f"submitted [bold]{result.job_id}[/]  {escape(safe_text(result.title))}  "
                f"({escape(safe_text(str(result.directory)))})"
            )
        for failure in failures if len(outcomes) > 1 else []:
            err_console().print(
                f"[bold red]failed:[/] {escape(safe_text(str(failure), multiline=True))}",
                soft_wrap=True,
            )
    if len(outcomes) == 1 and failures:
        raise CliError(
            str(failures[0]), hint="nothing was registered; check `storage:` in the config"
        )
    if failures:
        raise CliError(
            f"{len(failures)} of {len(outcomes)} submission(s) failed; those left nothing behind",
            hint="check storage settings with `relaymd clusters test`",
        )


def _upload_and_register(
    prepared: list[PreparedJob], *, show_progress: bool
) -> list[SubmitResult | SubmitError]:
    from rich.progress import TaskID

    from relaymd.cli import context
    from relaymd.cli.output import transfer_progress
    from relaymd.cli.storage import open_object_store
    from relaymd.submission.submit import submit_jobs

    store = open_object_store(context.load())
    state = context.open_state()
    progress = transfer_progress(show_progress)
    tasks: dict[Path, TaskID] = {}

    def on_progress(directory: Path, moved: int, total: int) -> None:
        task = tasks.get(directory)
        if task is None:
            task = tasks[directory] = progress.add_task(f"upload {directory.name}", total=total)
        progress.update(task, advance=moved)

    try:
        with progress:
            return submit_jobs(prepared, store=store, state=state, progress=on_progress)
    finally:
        state.close()
