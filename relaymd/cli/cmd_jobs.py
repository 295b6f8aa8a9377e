"""`relaymd jobs list|show|cancel|requeue|hold|release|logs|history|download`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from relaymd.cli.cmd_views import IntervalOpt, WatchOpt
from relaymd.cli.errors import CliError, ExitCode
from relaymd.timestamps import iso_timestamp
from relaymd.views.times import segment_times

if TYPE_CHECKING:
    from relaymd.models import GpuUsage, Job, JobState, OperatorRequest
    from relaymd.state import StateStore

app = typer.Typer(
    help="List and act on jobs. A job id can be shortened to any unique prefix.\n\n"
    "\b\nExamples:\n  relaymd jobs list\n  relaymd jobs list --state running --json\n"
    "  relaymd jobs show j1m8tk4\n  relaymd jobs history j1m8tk4\n  relaymd jobs cancel j1m8tk4\n"
    "  relaymd jobs download j1m8tk4 --dest ./results",
    no_args_is_help=True,
)

JobArg = Annotated[str, typer.Argument(help="Job id or unique prefix.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _progress(job: Job) -> str:
    if job.total_steps:
        return f"{job.step}/{job.total_steps} ({100 * job.step / job.total_steps:.0f}%)"
    return str(job.step) if job.step else "-"


@app.command("list")
def list_jobs(
    state: Annotated[
        list[str] | None,
        typer.Option("--state", "-s", help="Only jobs in this state (repeatable)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    offset: Annotated[int, typer.Option(help="Skip this many first.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """List jobs in scheduling order (priority, then age).

    \b
    Examples:
      relaymd jobs list
      relaymd jobs list --state queued --state held --limit 20
      relaymd jobs list --state failed --json
    """
    from rich.table import Table

    from relaymd.cli import context
    from relaymd.cli.output import age, console, plain, print_json, state_style, styled
    from relaymd.models import JobState

    try:
        states = [JobState(s) for s in state] if state else None
    except ValueError:
        valid = ", ".join(s.value for s in JobState)
        raise CliError(f"--state: unknown state; use one of {valid}", code=ExitCode.USAGE) from None
    store = context.open_state()
    jobs = store.list_jobs(states=states, limit=limit, offset=offset)
    if as_json:
        print_json(jobs)
        return
    if not jobs:
        console().print(
            "no jobs" + (" in that state" if states else "; submit one with `relaymd submit DIR`")
        )
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "TITLE", "STATE", "PROGRESS", "NS/DAY", "EPOCH", "RETRIES", "UPDATED"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            job.id,
            plain(job.spec.title),
            styled(job.state, state_style(job.state))
            + (f" ({job.operator_request} requested)" if job.operator_request else ""),
            _progress(job),
            f"{job.ns_per_day:.1f}" if job.ns_per_day else "-",
            str(job.epoch),
            str(job.retries),
            age(job.updated_at),
        )
    console().print(table)


@app.command("show")
def show(
    job_id: JobArg,
    as_json: JsonOpt = False,
    watch: WatchOpt = False,
    interval: IntervalOpt = 2.0,
) -> None:
    """Everything about one job: spec, state, resume point, bundle.

    \b
    Examples:
      relaymd jobs show j1m8tk4
      relaymd jobs show j1m8tk4 --json | jq .checkpoint
      relaymd jobs show j1m8tk4 --watch
    """
    from relaymd.cli import context

    if watch:
        from relaymd.cli.cmd_views import watch_relay

        watch_relay(job_id, interval)
        return
    from relaymd.cli.output import backoff_lines, console, plain, print_json, state_style, styled
    from relaymd.models import utcnow
    from relaymd.state.usage import job_usage

    store = context.open_state()
    job = context.find_job(store, job_id)
    # Why a queued job may not start: partitions backing off after workers died at start.
    waiting = []
    if job.state == "queued":
        allowed = set(job.spec.placement.allowed_clusters)
        for status in store.list_cluster_status():
            if not allowed or status.name in allowed:
                waiting.extend(backoff_lines(status))
    if as_json:
        print_json({**job.model_dump(), "waiting": waiting})
        return
    out = console()
    out.print(f"[bold]{job.id}[/]  {plain(job.spec.title)}")
    rows = [
        ("state", styled(job.state, state_style(job.state))),
        ("operator request", str(job.operator_request or "-")),
        ("engine", job.spec.engine.kind),
        ("image", plain(job.spec.image)),
        ("progress", _progress(job)),
        ("ns/day", f"{job.ns_per_day:.2f}" if job.ns_per_day else "-"),
        ("epoch", str(job.epoch)),
        ("allocation", job.allocation_id or "-"),
        ("retries", f"{job.retries}/{job.spec.max_retries}"),
        ("priority", str(job.spec.priority)),
        ("gpus", f"{job.spec.resources.gpus} (min {job.spec.resources.min_vram_gib} GiB)"),
        ("clusters", plain(", ".join(job.spec.placement.allowed_clusters) or "any")),
        ("bundle", f"{job.bundle.key} ({job.bundle.size} B, sha256 {job.bundle.sha256[:12]}…)"),
        (
            "resume point",
            f"{job.checkpoint.prefix} (step {job.checkpoint.step})" if job.checkpoint else "start",
        ),
        ("gpu time", _usage_line(job_usage(store, job.id, utcnow()))),
        ("failure", plain(job.failure_reason or "-")),
        *(("waiting", plain(line)) for line in waiting),
        ("created", iso_timestamp(job.created_at, "seconds")),
        ("updated", iso_timestamp(job.updated_at, "seconds")),
    ]
    for name, value in rows:
        out.print(f"  {name:<17}{value}")


def _usage_line(usage: GpuUsage) -> str:
    """allocated = simulating + idle (start-up, waits between segments, tail), GPU-seconds."""
    return (
        f"{usage.allocated_gpu_s:.0f} GPU-s allocated = {usage.simulating_gpu_s:.0f} simulating"
        f" + {usage.idle_gpu_s:.0f} idle (start-up {usage.startup_gpu_s:.0f},"
        f" between segments {usage.between_gpu_s:.0f}, tail {usage.tail_gpu_s:.0f})"
    )


def _set(store: StateStore, job: Job, **changes: object) -> Job:
    """Write the job read by `_job_to_change`; the compare-and-set cannot fail while the write
    lock taken before that read is held, and would say so loudly (ConflictError) if it did."""
    return store.update_job(job.model_copy(update=changes), expected_updated_at=job.updated_at)


def _change(store: StateStore, job: Job, audit: tuple[str, str], **changes: object) -> Job:
    """The job's changes and their audit record (kind, message), in one transaction."""
    with store.transaction():
        changed = _set(store, job, **changes)
        store.add_event(job_id=job.id, kind=audit[0], message=audit[1])
    return changed


def _move(
    store: StateStore,
    job: Job,
    new: JobState,
    audit: tuple[str, str],
    refusal: CliError,
    **changes: object,
) -> Job:
    """Move a job the operator may move (one on no allocation) along the job state machine;
    `refusal` when the machine does not allow it."""
    from relaymd.models.job import Actor, can_transition

    if not can_transition(job.state, new, Actor.OPERATOR):
        raise refusal
    return _change(store, job, audit, state=new, **changes)


def _ask_the_daemon(store: StateStore, job: Job, request: OperatorRequest) -> tuple[str, str]:
    """Store a request on a job on an allocation, which only the daemon moves on: (outcome,
    message) for the report."""
    verb = request.value
    audit = (f"{verb}_requested", f"operator asked to {verb} a running job")
    _change(store, job, audit, operator_request=request)
    return f"{verb}_requested", f"{verb} requested; the daemon stops the worker on its next cycle"


@contextmanager
def _job_to_change(job_id: str) -> Iterator[tuple[StateStore, Job]]:
    """The job read under the state file's write lock, held until the command's change is
    committed: the daemon, which writes a running job's progress every cycle, waits for the
    operator's change (or the operator for the daemon's) instead of one of them being refused.
    An error raised inside writes nothing."""
    from relaymd.cli import context

    store = context.open_state()
    with store.transaction():
        yield store, context.find_job(store, job_id)


def _report(action: str, job: Job, outcome: str, message: str, as_json: bool) -> None:
    from relaymd.cli.action_result import ActionResult, report

    report(ActionResult(action=action, target=job.id, outcome=outcome, message=message), as_json)


def _conflict(message: str, hint: str | None = None) -> CliError:
    return CliError(message, hint=hint, code=ExitCode.CONFLICT)


@app.command("cancel")
def cancel(job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Cancel a job. Queued/held: at once. Running: the daemon stops its worker (keeping the
    last checkpoint) on its next cycle.

    \b
    Examples:
      relaymd jobs cancel j1m8tk4
      relaymd jobs list --state running        # find the id first
    """
    from relaymd.models import JobState, OperatorRequest

    with _job_to_change(job_id) as (store, job):
        if job.state.on_allocation:
            outcome, message = _ask_the_daemon(store, job, OperatorRequest.CANCEL)
        else:
            refusal = _conflict(f"job {job.id} is already {job.state}")
            audit = ("cancelled", "cancelled by operator")
            _move(store, job, JobState.CANCELLED, audit, refusal, operator_request=None)
            outcome, message = "cancelled", "cancelled"
    _report("cancel", job, outcome, message, as_json)


@app.command("requeue")
def requeue(job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Put a job back in the queue. Running: the worker checkpoints and stops, then the job
    resumes from that checkpoint on the next allocation. Failed/cancelled/held: queued again
    from its last checkpoint, with the retry count reset.

    \b
    Examples:
      relaymd jobs requeue j1m8tk4   # running: checkpoint, stop, resume on the next allocation
      relaymd jobs list --state failed --json | jq -r '.[].id' | xargs -n1 relaymd jobs requeue
    """
    from relaymd.models import JobState, OperatorRequest

    with _job_to_change(job_id) as (store, job):
        if job.state is JobState.QUEUED:
            outcome, message = "already_queued", "already queued"
        elif job.state.on_allocation:
            outcome, message = _ask_the_daemon(store, job, OperatorRequest.REQUEUE)
        else:
            refusal = _conflict(f"job {job.id} is {job.state}; submit it again instead")
            audit = ("requeued", f"requeued by operator from {job.state}")
            reset = {"retries": 0, "failure_reason": None, "operator_request": None}
            _move(store, job, JobState.QUEUED, audit, refusal, **reset)
            outcome, message = "queued", "queued"
    _report("requeue", job, outcome, message, as_json)


@app.command("hold")
def hold(job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Keep a queued job from being assigned (queued -> held).

    \b
    Examples:
      relaymd jobs hold j1m8tk4
      relaymd jobs list --state held
    """
    _hold_move(job_id, as_json, hold=True)


@app.command("release")
def release(job_id: JobArg, as_json: JsonOpt = False) -> None:
    """Let a held job run again (held -> queued).

    \b
    Examples:
      relaymd jobs release j1m8tk4
      relaymd jobs list --state queued
    """
    _hold_move(job_id, as_json, hold=False)


def _hold_move(job_id: str, as_json: bool, *, hold: bool) -> None:
    """`jobs hold` (queued -> held; a held job is already held) and `jobs release` (held ->
    queued; a failed or cancelled job goes back with `jobs requeue`)."""
    from relaymd.models import JobState

    with _job_to_change(job_id) as (store, job):
        if hold and job.state is JobState.HELD:
            outcome, message = "already_held", "already held"
        elif hold:
            refusal = _conflict(
                f"job {job.id} is {job.state}; only a queued job can be held",
                hint="to stop a running job use `relaymd jobs requeue` then hold it",
            )
            _move(store, job, JobState.HELD, ("held", "held by operator"), refusal)
            outcome = message = JobState.HELD.value
        else:
            refusal = _conflict(f"job {job.id} is {job.state}, not held")
            if job.state is not JobState.HELD:
                raise refusal
            _move(store, job, JobState.QUEUED, ("released", "released by operator"), refusal)
            outcome = message = JobState.QUEUED.value
    _report("hold" if hold else "release", job, outcome, message, as_json)


@app.command("logs")
def logs(
    job_id: JobArg,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Show the last N lines.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The worker/engine log tail the daemon last read (running jobs) or kept (failures).

    \b
    Examples:
      relaymd jobs logs j1m8tk4
      relaymd jobs logs j1m8tk4 -n 200
      relaymd jobs logs j1m8tk4 --json | jq -r '.lines[]'
    """
    from relaymd.cli import context
    from relaymd.cli.output import print_json, safe_text

    job = context.find_job(context.open_state(), job_id)
    tail = job.log_tail[-lines:] if lines > 0 else list(job.log_tail)
    if as_json:
        print_json(
            {
                "job_id": job.id,
                "state": job.state,
                "failure_reason": job.failure_reason,
                "lines": tail,
            }
        )
        return
    # The worker and its engine wrote these: never let them drive the terminal.
    if job.failure_reason:
        print(f"# failure: {safe_text(job.failure_reason)}")
    if not tail:
        print(f"# no log lines stored for {job.id} yet (state {job.state})")
    for line in tail:
        print(safe_text(line))


@app.command("history")
def history(job_id: JobArg, as_json: JsonOpt = False) -> None:
    """The relay timeline: each segment with its cluster, allocation, steps and times.

    \b
    Examples:
      relaymd jobs history j1m8tk4
      relaymd jobs history j1m8tk4 --json | jq '.segments[].cluster'
    """
    from rich.table import Table

    from relaymd.cli import context
    from relaymd.cli.output import console, duration, plain, print_json, print_table

    store = context.open_state()
    job = context.find_job(store, job_id)
    segments = store.list_segments(job.id)
    if as_json:
        rows = []
        for segment in segments:
            start, end, source = segment_times(segment)
            rows.append(
                {
                    **segment.model_dump(),
                    "started": start,
                    "ended": end,
                    "times_from": source,
                }
            )
        from relaymd.models import utcnow
        from relaymd.state.usage import job_usage

        usage = job_usage(store, job.id, utcnow())
        print_json({"job": job, "segments": rows, "gpu_usage": usage})
        return
    out = console()
    out.print(f"[bold]{job.id}[/]  {plain(job.spec.title)}  ({job.state}, {_progress(job)})")
    if not segments:
        out.print("no segments yet: the job has not started on any allocation")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("EPOCH", "CLUSTER", "ALLOCATION", "STEPS", "STARTED", "TOOK", "OUTCOME"):
        table.add_column(column, no_wrap=True)
    table.add_column("REASON", ratio=1)  # the only column that wraps on a narrow terminal
    for segment in segments:
        start, end, _ = segment_times(segment)
        seconds = (end - start).total_seconds() if end else None
        steps = (
            f"{segment.start_step} → {segment.end_step if segment.end_step is not None else '…'}"
        )
        table.add_row(
            str(segment.epoch),
            segment.cluster,
            segment.allocation_id,
            steps,
            iso_timestamp(start, "seconds"),
            duration(seconds),
            segment.outcome,
            plain(segment.reason or ""),
        )
    print_table(out, table)
    clusters = sorted({s.cluster for s in segments})
    out.print(f"{len(segments)} segment(s) on {', '.join(clusters)}")


@app.command("download")
def download(
    job_id: JobArg,
    dest: Annotated[
        Path | None,
        typer.Option(
            "--dest", "-d", help="Target folder (default: ./<job id>).", show_default=False
        ),
    ] = None,
    outputs: Annotated[bool, typer.Option(help="Fetch every segment's outputs.")] = True,
    checkpoint: Annotated[bool, typer.Option(help="Fetch the latest verified checkpoint.")] = True,
    assemble: Annotated[
        bool,
        typer.Option(
            "--assemble",
            help="Also join the chunks into assembled/trajectory.dcd and "
            "assembled/state_data.csv (step order, overlaps removed, continuous time).",
        ),
    ] = False,
    xtc: Annotated[
        bool,
        typer.Option("--xtc", help="With --assemble: also write trajectory.xtc (needs mdtraj)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fetch outputs (outputs/<epoch>/...) and the latest checkpoint, verifying sha256.
    Files already downloaded with the right sha256 are not fetched again.

    \b
    Examples:
      relaymd jobs download j1m8tk4                       # into ./<job id>
      relaymd jobs download j1m8tk4 --assemble            # + assembled/trajectory.dcd, .csv
      relaymd jobs download j1m8tk4 --dest ./results --no-checkpoint
      relaymd jobs download j1m8tk4 --no-outputs --json   # latest checkpoint only
    """
    from relaymd.cli import context
    from relaymd.cli.download import download_job
    from relaymd.cli.output import print_json
    from relaymd.cli.storage import open_object_store

    loaded = context.load()
    job = context.find_job(context.open_state(loaded), job_id)
    target = dest or Path(job.id)
    result = download_job(
        job,
        open_object_store(loaded),
        target,
        outputs=outputs,
        checkpoint=checkpoint,
        show_progress=not as_json,
        assemble=assemble or xtc,
        xtc=xtc,
    )
    if as_json:
        print_json(result)
        return
    print(f"{len(result.files)} file(s) in {target}")
    if result.skipped:
        print(f"{result.skipped} of them already there (sha256 matched), not fetched again")
    if result.checkpoint_dir:
        print(f"latest checkpoint: {result.checkpoint_dir}")
    if result.assembled:
        made = result.assembled
        for path in (made.trajectory, made.xtc, made.state_data):
            if path is not None:
                print(f"assembled: {path}")
        print(
            f"steps {made.first_step}..{made.last_step}: {made.frames} frame(s), {made.rows} row(s)"
        )
