"""`relaymd demo`: a real OpenMM job relayed across short segments on this machine.

Uses the embedded default (local cluster, direct scheduler, file:// storage) with a short
walltime, submits a generated water box, runs the daemon in this process and shows the relay
live until the job completes. Nothing here is simulated: the same daemon, worker, mailbox and
storage code run as on a SLURM cluster.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from relaymd.cli.errors import CliError, ExitCode

if TYPE_CHECKING:
    from rich.console import Group

    from relaymd.config import LoadedConfig
    from relaymd.models import Job, Segment

# Seconds of each segment lost to worker start-up, the daemon's poll and the handoff margin;
# the step count is sized so that the job needs about `segments` segments.
SEGMENT_OVERHEAD_S = 12.0


def demo(
    segment_seconds: Annotated[
        float, typer.Option(help="Walltime of each local allocation (one segment), seconds.")
    ] = 30.0,
    segments: Annotated[int, typer.Option(help="About how many segments the job should need.")] = 4,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="RELAYMD_STATE_DIR",
            help="Where the demo's SQLite state goes.",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="RELAYMD_DATA_DIR",
            help="Where the demo's storage and scratch go.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 900.0,
) -> None:
    """Run a small OpenMM water box relayed across short local segments (about 2-3 min).

    Needs no config, no cluster and no cloud account: workers are local processes, storage is
    a folder. Afterwards `relaymd jobs history <id>` shows the relay again. It simulates on
    this machine, so it needs OpenMM here: `uv run relaymd demo` in a checkout has it; an
    installed tool needs the worker extra too (`uv tool install '.[operator,worker]'`).

    \b
    Examples:
      relaymd demo
      relaymd demo --state-dir /tmp/rmd/state --data-dir /tmp/rmd/data
      relaymd demo --segment-seconds 45 --segments 3
    """
    if segments < 1 or segment_seconds <= SEGMENT_OVERHEAD_S:
        raise CliError(
            f"--segment-seconds must exceed {SEGMENT_OVERHEAD_S:.0f} and --segments be >= 1",
            code=ExitCode.USAGE,
        )
    require_openmm()
    # Point every XDG-derived path at the chosen folders before anything reads them.
    if state_dir is not None:
        os.environ["RELAYMD_STATE_DIR"] = str(state_dir.expanduser().resolve())
    if data_dir is not None:
        os.environ["RELAYMD_DATA_DIR"] = str(data_dir.expanduser().resolve())

    from relaymd.cli import context
    from relaymd.cli.output import console

    loaded = demo_config(segment_seconds)
    context.set_loaded(loaded)
    out = console()
    job = _submit_demo_job(loaded, segment_seconds, segments)
    out.print(
        f"submitted [bold]{job.id}[/] ({job.total_steps} steps); relaying across "
        f"{segment_seconds:.0f}-second segments on the local cluster…"
    )
    final = _run_until_done(loaded, job.id, timeout)
    # Later commands find the demo's state only with the same folders.
    chosen = {"RELAYMD_STATE_DIR": state_dir, "RELAYMD_DATA_DIR": data_dir}
    env_prefix = "".join(
        f"{name}={shlex.quote(os.environ[name])} " for name, given in chosen.items() if given
    )
    _report(loaded, final, segment_seconds, env_prefix)
    if final.state.value != "completed":
        raise CliError(
            f"demo job {final.id} ended {final.state}: "
            f"{final.failure_reason or 'no reason recorded'}",
            hint=f"see `relaymd jobs logs {final.id}` and the daemon log",
        )


def require_openmm() -> None:
    """The demo simulates on this machine: say what to install instead of a traceback."""
    import importlib.util

    if importlib.util.find_spec("openmm") is None:
        raise CliError(
            "the demo runs a real OpenMM simulation on this machine, and OpenMM is not "
            "installed here (the `operator` extra leaves it out: workers run it on the clusters)",
            hint="install the worker side too: `uv tool install '.[operator,worker]'`, "
            "or run `uv run relaymd demo` in a checkout",
            code=ExitCode.USAGE,
        )


def demo_config(segment_seconds: float) -> LoadedConfig:
    """The embedded default, tuned for a demo: short walltime, fast polls, small margins."""
    from relaymd import paths
    from relaymd.config import LoadedConfig, embedded_default

    base = embedded_default()
    [local] = base.clusters
    partition = local.partitions[0].model_copy(update={"walltime_minutes": segment_seconds / 60})
    cluster = local.model_copy(
        update={
            "partitions": [partition],
            "poll": local.poll.model_copy(update={"min_interval_s": 1.0, "max_interval_s": 2.0}),
        }
    )
    config = base.config.model_copy(
        update={
            "clusters": [cluster],
            "state_path": str(paths.state_db()),
            "daemon": base.config.daemon.model_copy(
                update={
                    "stale_after_s": 60.0,
                    "stop_grace_s": 15.0,
                    "idle_poll_interval_s": 1.0,
                    "min_segment_s": 2.0,
                }
            ),
            "worker": base.config.worker.model_copy(
                update={
                    "heartbeat_interval_s": 2.0,
                    "idle_timeout_s": 5.0,
                    "handoff_margin_min_s": 3.0,
                    "handoff_margin_max_s": 8.0,
                }
            ),
        }
    )
    return LoadedConfig(config=config, source=None)


def _submit_demo_job(loaded: LoadedConfig, segment_seconds: float, segments: int) -> Job:
    import time

    from relaymd import paths
    from relaymd.cli import context
    from relaymd.cli.output import console
    from relaymd.cli.storage import open_object_store
    from relaymd.demo.water_box import write_water_box
    from relaymd.models import JobSpec, OpenMMSettings, Resources
    from relaymd.openmm_job import TOPOLOGY_FILE
    from relaymd.submission.errors import SubmitError
    from relaymd.submission.spec import SPEC_FILE
    from relaymd.submission.submit import submit_directory

    directory = paths.data_dir() / "demo" / f"input-{int(time.time())}"
    with console().status("building a TIP3P water box with OpenMM and timing it on this CPU…"):
        inputs = write_water_box(directory, timing_steps=300)
    assert inputs.steps_per_second is not None
    usable = segment_seconds - SEGMENT_OVERHEAD_S
    steps = max(1000, int(inputs.steps_per_second * usable * (segments - 0.5)) // 100 * 100)
    spec = JobSpec(
        title="demo: TIP3P water box",
        engine=OpenMMSettings(
            topology=TOPOLOGY_FILE,  # the generator writes it: atom names in the trajectory
            total_steps=steps,
            report_every_steps=500,
            dcd_every_steps=1000,
            platform="CPU",
        ),
        resources=Resources(gpus=0),
        checkpoint_interval_s=10.0,
        max_retries=1,
    )
    import yaml

    (directory / SPEC_FILE).write_text(
        yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    )
    console().print(
        f"water box: {inputs.atoms} atoms, {inputs.steps_per_second:.0f} steps/s on this CPU "
        f"(inputs in {directory})"
    )
    state = context.open_state(loaded)
    try:
        return submit_directory(
            directory, loaded=loaded, store=open_object_store(loaded), state=state
        )
    except SubmitError as exc:
        raise CliError(str(exc)) from None


def _run_until_done(loaded: LoadedConfig, job_id: str, timeout: float) -> Job:
    import asyncio

    return asyncio.run(_relay(loaded, job_id, timeout))


async def _relay(loaded: LoadedConfig, job_id: str, limit_s: float) -> Job:
    import asyncio
    import time

    from relaymd.cli import context
    from relaymd.daemon import run_daemon

    state = context.open_state(loaded)
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(loaded, interactive=False, stop=stop))
    view = _LiveView()
    deadline = time.monotonic() + limit_s
    try:
        with view:
            while True:
                job = state.get_job(job_id)
                assert job is not None
                view.update(job, state.list_segments(job_id))
                if job.state.is_final:
                    break
                if daemon.done():
                    daemon.result()  # raises the daemon's error, if any
                    raise CliError("the daemon stopped before the demo job finished")
                if time.monotonic() > deadline:
                    raise CliError(
                        f"demo job {job_id} not finished after {limit_s:.0f} s (state {job.state})",
                        hint="this machine may be slow: try --segments 3, or check the daemon log",
                    )
                await asyncio.sleep(1.0)
    finally:
        stop.set()
        try:
            await asyncio.wait_for(daemon, timeout=60)
        except (TimeoutError, asyncio.CancelledError):
            daemon.cancel()
    return job


class _LiveView:
    """A rich Live panel on a terminal; one line per change otherwise (logs, CI, tests)."""

    def __init__(self) -> None:
        from relaymd.cli.output import console

        self.console = console()
        self.live = None
        self.last_line = ""
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> _LiveView:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, job: Job, segments: list[Segment]) -> None:
        if self.live is not None:
            self.live.update(_render(job, segments))
            return
        done = sum(1 for s in segments if s.ended_at is not None)
        line = (
            f"[demo] job {job.state}, epoch {job.epoch}, segments {len(segments)} "
            f"({done} ended), step {job.step}/{job.total_steps}"
        )
        if line != self.last_line:
            print(line, flush=True)
            self.last_line = line


def _render(job: Job, segments: list[Segment]) -> Group:
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    total = job.total_steps or 1
    header = Text.assemble(
        (f"{job.id}  ", "bold"),
        f"{job.state}  step {job.step}/{total}  epoch {job.epoch}  ",
        f"{job.ns_per_day:.1f} ns/day" if job.ns_per_day else "",
    )
    table = Table(box=None, pad_edge=False)
    for column in ("#", "EPOCH", "CLUSTER", "ALLOCATION", "STEPS", "OUTCOME"):
        table.add_column(column)
    for number, segment in enumerate(segments, start=1):
        end = segment.end_step if segment.end_step is not None else "…"
        table.add_row(
            str(number),
            str(segment.epoch),
            segment.cluster,
            segment.allocation_id,
            f"{segment.start_step} → {end}",
            str(segment.outcome),
        )
    return Group(header, ProgressBar(total=total, completed=min(job.step, total), width=60), table)


def _report(loaded: LoadedConfig, job: Job, segment_seconds: float, env_prefix: str) -> None:
    from relaymd.cli.cmd_jobs import history
    from relaymd.cli.output import console

    out = console()
    out.print()
    history(job.id, as_json=False)
    storage_root = loaded.config.storage.url.removeprefix("file://")
    out.print()
    out.print(f"outputs and checkpoints: {storage_root}/jobs/{job.id}/")
    out.print(
        f"copy them here with:     {env_prefix}relaymd jobs download {job.id} --assemble",
        soft_wrap=True,
    )
    out.print(f"the relay again:         {env_prefix}relaymd jobs history {job.id}", soft_wrap=True)
    out.print(
        f"the demo used its own settings ({segment_seconds:g}-second local segments); "
        "real clusters: see README.md, `relaymd config init`",
        soft_wrap=True,
    )
