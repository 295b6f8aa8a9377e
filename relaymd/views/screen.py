"""What `status --watch` and `jobs show --watch` draw: rich renderables for a terminal, plain
lines otherwise. Pure functions of a RelaySnapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaymd.views.eta import human_span
from relaymd.views.snapshot import ClusterView, JobView, RelaySnapshot

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table

MAX_JOB_ROWS = 30  # the busiest jobs first; the rest are counted below the table
STATE_ORDER = {"running": 0, "assigned": 1, "queued": 2, "held": 3}


def shown_jobs(snapshot: RelaySnapshot, limit: int | None = MAX_JOB_ROWS) -> list[JobView]:
    """Active jobs (running first), then the final ones, at most `limit`."""
    return sorted(snapshot.jobs, key=lambda j: (STATE_ORDER.get(j.state, 9), j.id))[:limit]


def job_cells(job: JobView) -> list[str]:
    """STEPS, NS/DAY, WHERE, HANDOFF IN, ETA of a job, as text."""
    total = f"/{job.total_steps}" if job.total_steps else ""
    where = f"{job.cluster}/{job.allocation_id}" if job.cluster else "-"
    handoff = human_span(job.handoff_in_s) if job.handoff_in_s is not None else "-"
    eta = job.eta.basis if job.eta else ("done" if job.state == "completed" else "-")
    rate = f"{job.ns_per_day:.1f}" if job.ns_per_day else "-"
    return [f"{job.step}{total}", rate, where, handoff, eta]


def cluster_text(cluster: ClusterView) -> str:
    reach = cluster.reachability if cluster.enabled else "disabled"
    wait = (
        f", longest queue wait {human_span(cluster.longest_wait_s)}"
        if cluster.longest_wait_s is not None
        else ""
    )
    return f"{cluster.name}: {reach}, {cluster.pending} pending, {cluster.running} running{wait}"


def daemon_text(snapshot: RelaySnapshot) -> str:
    daemon = snapshot.daemon
    if daemon is None or daemon.last_cycle_at is None:
        return "daemon: never ran a cycle"
    ago = (snapshot.generated_at - daemon.last_cycle_at).total_seconds()
    return f"daemon: last cycle {human_span(max(0.0, ago))} ago ({daemon.cycles} cycles)"


def plain_lines(snapshot: RelaySnapshot) -> list[str]:
    """The view as plain lines (stdout not a terminal): one per job, cluster, daemon."""
    lines = [f"-- relay at {snapshot.generated_at:%Y-%m-%d %H:%M:%S} UTC"]
    for job in shown_jobs(snapshot):
        percent = f"{job.fraction:.0%}" if job.fraction is not None else "-"
        steps, rate, where, handoff, eta = job_cells(job)
        lines.append(
            f"job {job.id} {job.state} {percent} steps {steps} ns/day {rate} on {where}"
            f" handoff in {handoff} eta {eta}"
        )
    lines.extend(f"cluster {cluster_text(c)}" for c in snapshot.clusters)
    lines.append(daemon_text(snapshot))
    return lines


def render(snapshot: RelaySnapshot, footer: str) -> Group:
    """The live screen: the jobs table with progress bars, clusters, daemon, key help."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Table | Text] = [_jobs_table(snapshot)]
    hidden = len(snapshot.jobs) - MAX_JOB_ROWS
    if hidden > 0:
        parts.append(Text(f"(+{hidden} more jobs: relaymd jobs list)", style="dim"))
    parts.extend(Text(f"cluster {cluster_text(c)}") for c in snapshot.clusters)
    parts.append(Text(daemon_text(snapshot)))
    parts.append(Text(footer, style="dim"))
    return Group(*parts)


def _jobs_table(snapshot: RelaySnapshot) -> Table:
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    from relaymd.cli.output import state_style

    table = Table(box=None, pad_edge=False, title_justify="left")
    for column in ("JOB", "STATE", "PROGRESS", "", "STEPS", "NS/DAY", "WHERE", "HANDOFF IN"):
        table.add_column(column, no_wrap=True)
    table.add_column("ETA", ratio=1)  # the basis wraps rather than cutting a column
    for job in shown_jobs(snapshot):
        fraction = job.fraction
        bar = ProgressBar(total=1.0, completed=fraction or 0.0, width=20)
        percent = f"{fraction:.0%}" if fraction is not None else "-"
        table.add_row(
            job.id, f"[{state_style(job.state)}]{job.state}[/]", bar, percent, *job_cells(job)
        )
    return table
