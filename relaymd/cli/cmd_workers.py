"""`relaymd workers list`."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Allocations (SLURM jobs or local processes) carrying workers.\n\n"
    "\b\nExamples:\n  relaymd workers list\n  relaymd workers list --cluster clusterA --all --json",
    no_args_is_help=True,
)


@app.command("list")
def list_workers(
    cluster: Annotated[
        str | None, typer.Option(help="Only this cluster.", show_default=False)
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include ended allocations.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Allocations with cluster, SLURM id, state, GPU, job, heartbeat age and, for idle ones,
    why the daemon keeps or releases them (NOTE; `note` in --json). A multi-GPU allocation
    shows one row per GPU slot (`<group>-g<i>`, SLOT i/N, one SLURM id): its job, or `held`
    while its GPU serves another slot's multi-GPU job (`group_id`, `slot`, `held_by` in --json).

    \b
    Examples:
      relaymd workers list
      relaymd workers list --cluster clusterA --all
      relaymd workers list --json | jq -r '.[].scheduler_id'
    """
    from relaymd.cli import context
    from relaymd.cli.output import age, console, plain, print_json, state_style, styled, table
    from relaymd.models import AllocationState

    states = None if all_ else [s for s in AllocationState if not s.is_final]
    allocations = context.open_state().list_allocations(cluster=cluster, states=states)
    if as_json:
        print_json(allocations)
        return
    if not allocations:
        console().print("no allocations" + ("" if all_ else " (use --all to include ended ones)"))
        return
    listing = table(
        "ALLOCATION",
        "CLUSTER",
        "PARTITION",
        "SLURM ID",
        "SLOT",
        "STATE",
        "GPU",
        "JOB",
        "HEARTBEAT",
        "AGE",
        "NOTE",
    )
    jobs_of = {a.id: a.job_id for a in allocations}
    for alloc in allocations:
        # GPU names and end reasons come from the worker: shown literally.
        gpu = plain(", ".join(f"{g.name} ({g.memory_gib:.0f} GiB)" for g in alloc.gpus) or "-")
        state = styled(alloc.state, state_style(alloc.state))
        if alloc.end_reason and alloc.state is AllocationState.ENDED:
            state += f" ({plain(alloc.end_reason)})"
        if alloc.held_by is not None and alloc.state is not AllocationState.ENDED:
            state += f" (held for job {jobs_of.get(alloc.held_by) or alloc.held_by})"
        slot = f"{alloc.slot}/{alloc.slot_count}" if alloc.group_id else "-"
        listing.add_row(
            alloc.id,
            alloc.cluster,
            alloc.partition,
            alloc.scheduler_id or "-",
            slot,
            state,
            gpu,
            alloc.job_id or "-",
            age(alloc.seq_changed_at) + (" ago" if alloc.seq_changed_at else ""),
            age(alloc.started_at or alloc.submitted_at),
            alloc.note or "-",
        )
    console().print(listing)
