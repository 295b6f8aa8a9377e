"""`relaymd status`: one screen from SQLite only (no SSH, no storage), instant.

Imports neither typer nor the command modules: `relaymd.cli.main.main` runs a plain
`relaymd status [--json]` straight through `show_status`, the hot path of the CLI.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from relaymd.models import (
    Allocation,
    AllocationState,
    ClusterProfile,
    ClusterStatus,
    DaemonStatus,
    GpuUsage,
    JobState,
    StatusSummary,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from relaymd.config import LoadedConfig
    from relaymd.state import StateStore

JOB_ORDER = ("queued", "assigned", "running", "held", "completed", "failed", "cancelled")
REACHABILITY_STYLE = {
    "reachable": "green",
    "needs-auth": "yellow",
    "host-key-changed": "red",
    "unreachable": "red",
    "disabled": "dim",
}


class ClusterRow(BaseModel):
    """One configured cluster as status shows it (its row in the table and in --json)."""

    name: str
    enabled: bool
    reachability: str
    pending: int
    running: int
    last_poll_at: datetime | None
    last_error: str | None
    backoff: list[str]


class SlotReport(BaseModel):
    """GPU slots of the live multi-GPU allocations (ADR 0026), from the rows status reads
    for GPU time anyway: no query of its own."""

    groups: int = 0
    slots: int = 0
    busy: int = 0  # running a job
    held: int = 0  # lent to another slot's multi-GPU job
    idle: int = 0

    @classmethod
    def of(cls, allocations: list[Allocation]) -> SlotReport:
        live = [
            a
            for a in allocations
            if a.group_id is not None and a.slot_count > 1 and a.state is AllocationState.RUNNING
        ]
        busy = sum(a.job_id is not None for a in live)
        held = sum(a.held_by is not None for a in live)
        return cls(
            groups=len({a.group_id for a in live}),
            slots=len(live),
            busy=busy,
            held=held,
            idle=len(live) - busy - held,
        )


class DaemonReport(BaseModel):
    running: bool
    pid: int | None
    status: DaemonStatus | None


class StatusReport(BaseModel):
    """The status screen's content; its fields (in this order) are `status --json`."""

    jobs: dict[str, int]
    total_jobs: int
    running_ns_per_day: float
    gpu_usage: GpuUsage
    clusters: list[ClusterRow]
    daemon: DaemonReport
    generated_at: datetime
    running_jobs: int = Field(exclude=True)  # shown on the screen, not part of --json
    gpu_slots: SlotReport = Field(default_factory=SlotReport)


class ClusterEntry(BaseModel):
    """A configured cluster with what the daemon last saw of it (`relaymd clusters list`)."""

    name: str
    transport: str
    scheduler: str
    enabled: bool
    partitions: list[str]
    status: ClusterStatus | None
    backoff: list[str]
    profile: ClusterProfile = Field(exclude=True)  # the table shows more of it than --json


def cluster_entries(loaded: LoadedConfig, store: StateStore) -> list[ClusterEntry]:
    """Every configured cluster in config order; `enabled` as switched, else as configured."""
    from relaymd.cli.output import backoff_lines

    seen = {s.name: s for s in store.list_cluster_status()}
    entries = []
    for profile in loaded.clusters:
        status = seen.get(profile.name)
        entries.append(
            ClusterEntry(
                name=profile.name,
                transport=profile.transport,
                scheduler=profile.scheduler,
                enabled=status.enabled if status else profile.enabled,
                partitions=[p.name for p in profile.partitions],
                status=status,
                backoff=backoff_lines(status) if status else [],
                profile=profile,
            )
        )
    return entries


def show_status(as_json: bool = False) -> None:
    """Print the status screen, or with `as_json` one JSON document, to stdout."""
    from relaymd.cli import context
    from relaymd.cli.output import console, print_json

    loaded = context.load()
    report = collect_status(loaded, context.open_state(loaded), context.read_pid())
    if as_json:
        print_json(report)
    else:
        _print_screen(console(), report)


def collect_status(loaded: LoadedConfig, store: StateStore, pid: int | None) -> StatusReport:
    """Everything the screen shows, from one snapshot of the state file."""
    from relaymd.models import utcnow
    from relaymd.state.usage import total_usage

    summary = store.status_summary()
    allocations = store.list_allocations()
    return StatusReport(
        jobs={state: summary.jobs.get(JobState(state), 0) for state in JOB_ORDER},
        total_jobs=summary.total_jobs,
        running_ns_per_day=summary.running_ns_per_day,
        gpu_usage=total_usage(allocations, store.list_segments_on(), utcnow()),
        clusters=_cluster_rows(loaded, summary),
        daemon=DaemonReport(running=pid is not None, pid=pid, status=summary.daemon),
        generated_at=summary.generated_at,
        running_jobs=summary.running_jobs,
        gpu_slots=SlotReport.of(allocations),
    )


def _cluster_rows(loaded: LoadedConfig, summary: StatusSummary) -> list[ClusterRow]:
    seen = {c.name: c for c in summary.clusters}
    return [
        _cluster_row(profile.name, profile.enabled, seen.get(profile.name), summary)
        for profile in loaded.clusters
    ]


def _cluster_row(
    name: str, configured_enabled: bool, cluster: ClusterStatus | None, summary: StatusSummary
) -> ClusterRow:
    from relaymd.cli.output import backoff_lines

    counts = summary.allocations_on(name)
    return ClusterRow(
        name=name,
        enabled=cluster.enabled if cluster else configured_enabled,
        reachability=str(cluster.reachability) if cluster else "unknown",
        pending=counts.get(AllocationState.SUBMITTING, 0) + counts.get(AllocationState.PENDING, 0),
        running=counts.get(AllocationState.RUNNING, 0),
        last_poll_at=cluster.last_poll_at if cluster else None,
        last_error=cluster.last_error if cluster else None,
        backoff=backoff_lines(cluster) if cluster else [],
    )


def _print_screen(out: Console, report: StatusReport) -> None:
    from relaymd.cli.output import plain, state_style, styled

    parts = [
        styled(f"{s} {n}", state_style(s))
        for s, n in report.jobs.items()
        if n or s in ("queued", "running")
    ]
    out.print(f"[bold]jobs[/]      {'  '.join(parts)}  (total {report.total_jobs})")
    out.print(
        f"[bold]throughput[/] {report.running_ns_per_day:.1f} ns/day over "
        f"{report.running_jobs} running job(s)"
    )
    out.print(_gpu_line(report.gpu_usage))
    slots = report.gpu_slots
    if slots.slots:
        out.print(
            f"[bold]gpu slots[/]  {slots.slots} in {slots.groups} multi-GPU allocation(s):"
            f" {slots.busy} running a job, {slots.held} held, {slots.idle} idle"
            " (`relaymd workers list` shows each)"
        )
    out.print(_cluster_table(report.clusters))
    for row in report.clusters:
        for line in row.backoff:
            out.print(f"[yellow]backoff[/]   {plain(line)}", soft_wrap=True)
    _print_daemon(out, report.daemon)


def _gpu_line(usage: GpuUsage) -> str:
    idle_share = usage.idle_gpu_s / usage.allocated_gpu_s if usage.allocated_gpu_s else 0.0
    return (
        f"[bold]gpu time[/]   {usage.allocated_gpu_s / 3600:.2f} GPU-h allocated:"
        f" {usage.simulating_gpu_s / 3600:.2f} simulating, {usage.idle_gpu_s / 3600:.2f} idle"
        f" ({idle_share:.0%}: start-up {usage.startup_gpu_s / 3600:.2f}, between segments"
        f" {usage.between_gpu_s / 3600:.2f}, tail {usage.tail_gpu_s / 3600:.2f})"
    )


def _cluster_table(rows: list[ClusterRow]) -> Table:
    from relaymd.cli.output import age, plain, styled, table

    listing = table("CLUSTER", "STATUS", "PENDING", "RUNNING", "LAST POLL", "LAST ERROR")
    for row in rows:
        reach = row.reachability if row.enabled else "disabled"
        listing.add_row(
            row.name,
            styled(reach, REACHABILITY_STYLE.get(reach, "")),
            str(row.pending),
            str(row.running),
            age(row.last_poll_at),
            plain(error_column(reach, row.last_error, 70)),
        )
    return listing


def _print_daemon(out: Console, daemon: DaemonReport) -> None:
    from relaymd.cli.output import age

    status = daemon.status
    last = (
        f"last cycle {age(status.last_cycle_at)} ago, {status.cycles} cycles"
        if status
        else "never ran"
    )
    state = f"[green]running[/] (pid {daemon.pid})" if daemon.pid else "[yellow]not running[/]"
    out.print(f"[bold]daemon[/]    {state}; {last}")
    if daemon.pid is None:
        out.print("            start it with `relaymd daemon start` (or `relaymd daemon run`)")


def error_column(reachability: str, error: str | None, width: int) -> str:
    """A cluster's last error cut to `width`; for a changed host key the whole fix command
    instead (a truncated MITM warning would hide the `ssh-keygen -R` the operator needs)."""
    text = error or ""
    if reachability == "host-key-changed" and "`ssh-keygen" in text:
        command = text.split("`ssh-keygen", 1)[1].split("`", 1)[0]
        return f"host key changed; once your admins confirm: ssh-keygen{command}"
    return text[:width]
