"""`relaymd report`, `relaymd dashboard` and the `--watch` of `status` / `jobs show`: views
of the relay from the state file alone, opened read-only (no cluster, no daemon needed)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from relaymd.cli.errors import CliError, ExitCode

if TYPE_CHECKING:
    from relaymd.state import StateStore
    from relaymd.views.snapshot import RelaySnapshot

FORMATS = ("html", "svg", "png")
# The live view's options, shared by `status` and `jobs show`.
WatchOpt = Annotated[
    bool, typer.Option("--watch", "-w", help="Live view: progress, ETA, queues; q quits.")
]
IntervalOpt = Annotated[
    float, typer.Option("--interval", min=0.2, help="Seconds between refreshes of --watch.")
]


def open_views_state() -> StateStore:
    """The state file, read-only: a view never creates, migrates or locks it."""
    from relaymd.cli import context
    from relaymd.state import files
    from relaymd.state.errors import StateFileProblem, StateStoreError
    from relaymd.state.readonly import open_readonly

    path = files.state_path(context.load().config)
    try:
        return open_readonly(path)
    except FileNotFoundError:
        raise CliError(
            f"no state file at {path}: nothing was submitted with this config yet",
            hint="submit a job with `relaymd submit`, or give the config that made it (-c)",
            code=ExitCode.NOT_FOUND,
        ) from None
    except StateFileProblem as exc:
        raise CliError(str(exc), hint=exc.hint) from None
    except StateStoreError as exc:
        raise CliError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise context.state_failure(exc) from None


def _fresh_snapshot(path: Path) -> RelaySnapshot:
    """A snapshot through a connection of its own: the dashboard answers on many threads."""
    from relaymd.state.readonly import open_readonly

    with open_readonly(path) as store:
        return _take(store, None)


def _open_for_jobs(job_prefixes: list[str] | None) -> tuple[StateStore, list[str] | None]:
    from relaymd.cli import context

    store = open_views_state()
    if not job_prefixes:
        return store, None
    return store, [context.find_job(store, prefix).id for prefix in job_prefixes]


def _take(store: StateStore, job_ids: list[str] | None) -> RelaySnapshot:
    from relaymd.models import utcnow
    from relaymd.views.snapshot import take_snapshot

    return take_snapshot(store, utcnow(), job_ids)


def watch_relay(job_prefix: str | None, interval_s: float) -> None:
    """The live view of every job, or of the one job `job_prefix` names."""
    from relaymd.cli.output import console
    from relaymd.views.watch import watch

    store, job_ids = _open_for_jobs([job_prefix] if job_prefix else None)
    watch(lambda: _take(store, job_ids), interval_s, console())


def _needs_report_extra(exc: ImportError) -> CliError:
    return CliError(
        f"the views need the `report` extra ({exc.name} is not installed)",
        hint="install it: pip install 'relaymd[report]' (or uv sync --extra report)",
        code=ExitCode.USAGE,
    )


def report(
    jobs: Annotated[
        list[str] | None,
        typer.Argument(help="Job ids or unique prefixes (default: all).", show_default=False),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default relay-report.<format>).",
                     show_default=False),
    ] = None,
    image_format: Annotated[
        str, typer.Option("--format", "-f", help="html (every view), svg or png (the timeline).")
    ] = "html",
) -> None:  # fmt: skip
    """A relay report from the state file: one self-contained HTML page (opens offline,
    e.g. after scp) with the timeline, progress and ETA, GPU-hours, handoff losses, queue
    waits and failures; or with --format svg|png the timeline alone.

    \b
    Examples:
      relaymd report -o report.html
      relaymd report j1m8tk4 j1m9xq2 -o two-jobs.html
      relaymd report --format svg -o timeline.svg
    """
    from relaymd.cli.output import console

    if image_format not in FORMATS:
        raise CliError(
            f"--format {image_format!r}: give one of {', '.join(FORMATS)}", code=ExitCode.USAGE
        )
    target = output or Path(f"relay-report.{image_format}")
    store, job_ids = _open_for_jobs(jobs)
    snapshot = _take(store, job_ids)
    partial = target.with_name(f".{target.name}.partial")
    try:
        if image_format == "html":
            from relaymd.views.page import PageOptions, render_page

            partial.write_text(render_page(snapshot, PageOptions()), encoding="utf-8")
        else:
            from relaymd.views.timeline_image import write_timeline_image

            write_timeline_image(snapshot, partial, image_format)
        os.replace(partial, target)  # never a half-written report under the asked name
    except ImportError as exc:
        raise _needs_report_extra(exc) from None
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    console().print(
        f"wrote {target} ({len(snapshot.jobs)} job(s), {len(snapshot.segments)} segments)"
    )


def dashboard(
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port (0: any free one).")] = 8765,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; not loopback only with --token.")
    ] = "127.0.0.1",
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="RELAYMD_DASHBOARD_TOKEN", show_default=False,
                     help="Required in the URL (?token=) when binding beyond loopback."),
    ] = None,
    refresh: Annotated[int, typer.Option("--refresh", min=1, help="Page reload seconds.")] = 10,
) -> None:  # fmt: skip
    """A read-only local web page with the report's views, re-read from the state file and
    reloading itself; needs no daemon and no cluster. Ctrl-C stops it.

    \b
    Examples:
      relaymd dashboard                 (then open http://127.0.0.1:8765/)
      relaymd dashboard --port 9000
    """
    from relaymd.cli.output import console
    from relaymd.views.dashboard import is_loopback, make_server

    if not is_loopback(host) and not token:
        raise CliError(
            f"--host {host} is not a loopback address: anyone who reaches it would see your jobs",
            hint="add --token <secret> (then open the URL with ?token=<secret>), or bind 127.0.0.1",
            code=ExitCode.USAGE,
        )
    open_views_state().close()  # a missing or unreadable state file: say so now, not per page
    from relaymd.cli import context
    from relaymd.state import files

    path = files.state_path(context.load().config)
    try:
        server = make_server(host, port, lambda: _fresh_snapshot(path), token, refresh)
    except ImportError as exc:
        raise _needs_report_extra(exc) from None
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                       hint="pick another --port") from None  # fmt: skip
    bound_port = server.server_address[1]
    query = "?token=<token>" if token else ""
    console().print(f"dashboard on http://{host}:{bound_port}/{query}  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # the ordinary way to stop it
    finally:
        server.server_close()
