"""`relaymd status`: one screen from SQLite only (no SSH, no storage), instant.

Imports neither typer nor the command modules: `relaymd.cli.main.main` runs a plain
`relaymd status [--json]` straight through `show_status`, the hot path of the CLI.
"""

from __future__ import annotations

JOB_ORDER = ("queued", "assigned", "running", "held", "completed", "failed", "cancelled")


def show_status(as_json: bool = False) -> None:
    """Print the status screen, or with `as_json` one JSON document, to stdout."""
    from relaymd.cli import context
    from relaymd.cli.output import (
        age,
        backoff_lines,
        console,
        plain,
        print_json,
        state_style,
        styled,
    )
    from relaymd.models import utcnow
    from relaymd.state.usage import total_usage

    loaded = context.load()
    store = context.open_state(loaded)
    summary = store.status_summary()
    usage = total_usage(store.list_allocations(), store.list_segments_on(), utcnow())
    pid = context.read_pid()
    jobs = {state: summary.jobs.get(state, 0) for state in JOB_ORDER}  # type: ignore[call-overload]
    seen = {c.name: c for c in summary.clusters}
    clusters = []
    for profile in loaded.clusters:
        cluster = seen.get(profile.name)
        counts = summary.allocations_on(profile.name)
        clusters.append(
            {
                "name": profile.name,
                "enabled": cluster.enabled if cluster else profile.enabled,
                "reachability": str(cluster.reachability) if cluster else "unknown",
                "pending": sum(v for k, v in counts.items() if k in ("submitting", "pending")),
                "running": counts.get("running", 0),  # type: ignore[call-overload]
                "last_poll_at": cluster.last_poll_at if cluster else None,
                "last_error": cluster.last_error if cluster else None,
                "backoff": backoff_lines(cluster) if cluster else [],
            }
        )
    if as_json:
        print_json(
            {
                "jobs": jobs,
                "total_jobs": summary.total_jobs,
                "running_ns_per_day": summary.running_ns_per_day,
                "gpu_usage": usage,
                "clusters": clusters,
                "daemon": {"running": pid is not None, "pid": pid, "status": summary.daemon},
                "generated_at": summary.generated_at,
            }
        )
        return

    from rich.table import Table

    out = console()
    parts = [
        styled(f"{s} {n}", state_style(s))
        for s, n in jobs.items()
        if n or s in ("queued", "running")
    ]
    out.print(f"[bold]jobs[/]      {'  '.join(parts)}  (total {summary.total_jobs})")
    out.print(
        f"[bold]throughput[/] {summary.running_ns_per_day:.1f} ns/day over "
        f"{summary.running_jobs} running job(s)"
    )
    idle_share = usage.idle_gpu_s / usage.allocated_gpu_s if usage.allocated_gpu_s else 0.0
    out.print(
        f"[bold]gpu time[/]   {usage.allocated_gpu_s / 3600:.2f} GPU-h allocated:"
        f" {usage.simulating_gpu_s / 3600:.2f} simulating, {usage.idle_gpu_s / 3600:.2f} idle"
        f" ({idle_share:.0%}: start-up {usage.startup_gpu_s / 3600:.2f}, between segments"
        f" {usage.between_gpu_s / 3600:.2f}, tail {usage.tail_gpu_s / 3600:.2f})"
    )
    table = Table(box=None, pad_edge=False, title=None)
    for column in ("CLUSTER", "STATUS", "PENDING", "RUNNING", "LAST POLL", "LAST ERROR"):
        table.add_column(column)
    for row in clusters:
        reach = str(row["reachability"])
        if not row["enabled"]:
            reach = "disabled"
        style = {
            "reachable": "green",
            "needs-auth": "yellow",
            "host-key-changed": "red",
            "unreachable": "red",
            "disabled": "dim",
        }
        table.add_row(
            str(row["name"]),
            styled(reach, style.get(reach, "")),
            str(row["pending"]),
            str(row["running"]),
            age(row["last_poll_at"]),  # type: ignore[arg-type,unused-ignore]
            plain(error_column(reach, row["last_error"], 70)),  # type: ignore[arg-type,unused-ignore]
        )
    out.print(table)
    for row in clusters:
        for line in row["backoff"]:
            out.print(f"[yellow]backoff[/]   {plain(line)}", soft_wrap=True)
    daemon = summary.daemon
    last = (
        f"last cycle {age(daemon.last_cycle_at)} ago, {daemon.cycles} cycles"
        if daemon
        else "never ran"
    )
    state = f"[green]running[/] (pid {pid})" if pid else "[yellow]not running[/]"
    out.print(f"[bold]daemon[/]    {state}; {last}")
    if pid is None:
        out.print("            start it with `relaymd daemon start` (or `relaymd daemon run`)")


def error_column(reachability: str, error: str | None, width: int) -> str:
    """A cluster's last error cut to `width`; for a changed host key the whole fix command
    instead (a truncated MITM warning would hide the `ssh-keygen -R` the operator needs)."""
    text = error or ""
    if reachability == "host-key-changed" and "`ssh-keygen" in text:
        command = text.split("`ssh-keygen", 1)[1].split("`", 1)[0]
        return f"host key changed; once your admins confirm: ssh-keygen{command}"
    return text[:width]
