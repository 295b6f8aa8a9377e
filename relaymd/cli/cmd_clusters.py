"""`relaymd clusters list|enable|disable|test`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from relaymd.cli.errors import CliError, ExitCode

if TYPE_CHECKING:
    from rich.table import Table

    from relaymd.cli.cluster_checks import CheckResult
    from relaymd.cli.status_view import ClusterEntry
    from relaymd.config import LoadedConfig
    from relaymd.models import ClusterProfile, ClusterStatus

app = typer.Typer(
    help="Clusters from the config, their reachability and on/off switch.\n\n"
    "\b\nExamples:\n  relaymd clusters list\n  relaymd clusters test clusterA\n"
    "  relaymd clusters disable clusterB   # no new allocations there; running ones finish",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Cluster name from the config.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("list")
def list_clusters(as_json: JsonOpt = False) -> None:
    """Configured clusters with what the daemon last saw of them.

    \b
    Examples:
      relaymd clusters list
      relaymd clusters list --json | jq -r '.[] | select(.enabled) | .name'
    """
    from relaymd.cli import context
    from relaymd.cli.output import console, plain, print_json
    from relaymd.cli.status_view import cluster_entries

    loaded = context.load()
    entries = cluster_entries(loaded, context.open_state(loaded))
    if as_json:
        print_json(entries)
        return
    console().print(_clusters_table(entries))
    for entry in entries:
        for line in entry.backoff:
            console().print(f"[yellow]backoff:[/] {plain(line)}", soft_wrap=True)


def _clusters_table(entries: list[ClusterEntry]) -> Table:
    from relaymd.cli.output import age, plain, table
    from relaymd.cli.status_view import error_column

    listing = table(
        "NAME", "TRANSPORT", "SCHEDULER", "PARTITIONS", "ENABLED", "STATUS", "LAST POLL", "ERROR"
    )
    for entry in entries:
        profile, status = entry.profile, entry.status
        host = f" ({profile.ssh.host})" if profile.ssh else ""
        listing.add_row(
            profile.name,
            profile.transport + host,
            _scheduler_text(profile),
            ", ".join(f"{p.name} {p.walltime_minutes:g}m" for p in profile.partitions),
            "yes" if entry.enabled else "[yellow]no[/]",
            _reachability(status),
            age(status.last_poll_at if status else None),
            plain(
                error_column(
                    str(status.reachability) if status else "",
                    status.last_error if status else None,
                    60,
                )
            ),
        )
    return listing


def _scheduler_text(profile: ClusterProfile) -> str:
    """`salad` says when it is used: HPC first (ADR 0025)."""
    if profile.salad is None or profile.scheduler != "salad":
        return profile.scheduler
    wait_min = profile.salad.wait_before_s / 60
    return f"salad (after {wait_min:g}m waiting, max {profile.salad.max_replicas} replicas)"


def _reachability(status: ClusterStatus | None) -> str:
    from relaymd.cli.status_view import REACHABILITY_STYLE

    if status is None:
        return "unknown (not polled yet)"
    value = str(status.reachability)
    style = REACHABILITY_STYLE.get(value, "")
    return f"[{style}]{value}[/]" if style else value


def _toggle(name: str, enabled: bool, as_json: bool) -> None:
    from relaymd.cli import context
    from relaymd.cli.action_result import ActionResult, report

    loaded = context.load()
    try:
        loaded.cluster(name)
    except Exception as exc:
        raise CliError(
            str(exc), hint="see `relaymd clusters list`", code=ExitCode.NOT_FOUND
        ) from None
    context.open_state(loaded).set_cluster_enabled(name, enabled)
    what = "enabled" if enabled else "disabled (running jobs finish; nothing new starts there)"
    outcome = "enabled" if enabled else "disabled"
    action = "enable" if enabled else "disable"
    report(ActionResult(action=action, target=name, outcome=outcome, message=what), as_json)


@app.command("enable")
def enable(name: NameArg, as_json: JsonOpt = False) -> None:
    """Allow new allocations on a cluster again.

    \b
    Examples:
      relaymd clusters enable clusterB
      relaymd clusters list              # ENABLED shows yes again
    """
    _toggle(name, True, as_json)


@app.command("disable")
def disable(name: NameArg, as_json: JsonOpt = False) -> None:
    """Start nothing new on a cluster: no new allocations, no new jobs for its idle workers.

    Jobs already running there finish their segment; its pending allocations are cancelled.

    \b
    Examples:
      relaymd clusters disable clusterB   # e.g. before its maintenance window
      relaymd workers list --cluster clusterB   # the allocations still finishing there
    """
    _toggle(name, False, as_json)


@app.command("test")
def test(name: NameArg, as_json: JsonOpt = False) -> None:
    """Connect and check SLURM tools, scratch, apptainer + image (or native worker), storage.

    Exit 3 when the cluster cannot be reached, 1 when a check fails.

    \b
    Examples:
      relaymd clusters test clusterA
      relaymd clusters test local
      relaymd clusters test clusterA --json | jq '.checks[] | select(.ok | not)'
    """
    from relaymd.cli import context
    from relaymd.cli.output import console, print_json

    loaded = context.load()
    try:
        profile = loaded.cluster(name)
    except Exception as exc:
        raise CliError(
            str(exc), hint="see `relaymd clusters list`", code=ExitCode.NOT_FOUND
        ) from None
    # A storage cluster (ADR 0022) has no login node: the bucket is all there is to check.
    if profile.scheduler == "salad":
        from relaymd.cli.salad_checks import salad_checks

        results = salad_checks(loaded, profile)  # the API, not a login node (ADR 0025)
    else:
        results = [] if profile.scheduler == "storage" else _run_checks(profile)
    results.append(_storage_check(loaded))
    if as_json:
        print_json({"cluster": name, "ok": all(r.ok for r in results), "checks": results})
    else:
        out = console()
        for result in results:
            mark = "[green]pass[/]" if result.ok else "[red]FAIL[/]"
            out.print(f"{mark}  {result.name:<14} {result.detail}", soft_wrap=True)
            if result.hint:
                out.print(f"      [yellow]hint:[/] {result.hint}", soft_wrap=True)
    if not all(r.ok for r in results):
        raise typer.Exit(int(ExitCode.FAILED))


def _run_checks(profile: ClusterProfile) -> list[CheckResult]:
    import asyncio

    from relaymd.cli.cluster_checks import build_check_script, parse_check_output
    from relaymd.transport import TransportError, make_transport

    async def go() -> str:
        transport = make_transport(profile)
        try:
            result = await transport.run(build_check_script(profile))
        finally:
            await transport.close()
        return str(result.stdout)

    try:
        stdout = asyncio.run(go())
    except (TransportError, OSError, TimeoutError) as exc:
        where = profile.ssh.host if profile.ssh else "localhost"
        raise CliError(
            f"cluster {profile.name}: cannot reach {where}: {exc}",
            hint="check `ssh:` in the profile and that `ssh <host>` works without a prompt "
            "(2FA: see docs/hpc-notes.md)",
            code=ExitCode.UNREACHABLE,
        ) from None
    return parse_check_output(stdout)


def _storage_check(loaded: LoadedConfig) -> CheckResult:
    from relaymd.cli.cluster_checks import HINTS, CheckResult
    from relaymd.cli.storage import open_object_store

    try:
        store = open_object_store(loaded)
        store.check()
    except Exception as exc:
        return CheckResult(name="storage", ok=False, detail=str(exc), hint=HINTS["storage"])
    return CheckResult(name="storage", ok=True, detail=store.url)
