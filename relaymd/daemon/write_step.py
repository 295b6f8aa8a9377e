"""The cycle's write: one round trip that acts on the committed decisions (new allocations'
folders, credentials, job scripts and submits; assignments, successors and controls; the
removals owed; cancels), then the commit of what the submits returned.

Everything written derives from committed rows, so a crash anywhere is repaired by the next
cycle: an unconfirmed submit stays `submitting` until a read adopts it by job name or drops
it, and an assignment is rewritten until the worker shows it took it.
"""

from __future__ import annotations

import os
import signal

from relaymd.daemon.audit import record_event
from relaymd.daemon.carried import CarriedState
from relaymd.daemon.commit import Committed
from relaymd.daemon.context import DaemonContext
from relaymd.daemon.scope import CycleScope
from relaymd.ids import slot_allocation_id
from relaymd.logging import get_logger
from relaymd.mailbox.carrier import ClusterSnapshot, FileRemoval, FileWrite
from relaymd.mailbox.daemon_files import (
    assignment_file,
    assignment_needed,
    control_file,
    control_needed,
    credentials_file,
    hold_needed,
    slot_control_file,
    successor_file,
    successor_needed,
    unhold_needed,
    withdrawal_needed,
)
from relaymd.mailbox.layout import ASSIGNMENT_FILE, CONTROL_FILE, CREDENTIALS_FILE, alloc_dir
from relaymd.mailbox.models import ControlAction, Heartbeat
from relaymd.mailbox.scratch_write import SubmitCommand, WritePlan, WriteResult
from relaymd.models import (
    Allocation,
    AllocationState,
    ClusterProfile,
    Job,
    JobState,
    utcnow,
)
from relaymd.scheduler.job_script import JOB_SCRIPT, worker_args
from relaymd.scheduler.port import SchedulerPort

log = get_logger(__name__)

# Fault injection for the crash-safety tests only: kill this process with SIGKILL right before
# or right after the write that runs sbatch (the two moments invariant 4 is about).
_FAULT = os.environ.get("RELAYMD_TEST_FAULT", "")


def _maybe_crash(point: str) -> None:
    if point == _FAULT:
        log.warning("test_fault_crash", point=point)
        os.kill(os.getpid(), signal.SIGKILL)


def _plan_submits(
    plan: WritePlan,
    new: list[Allocation],
    ctx: DaemonContext,
    profile: ClusterProfile,
    scheduler: SchedulerPort,
) -> None:
    for alloc in new:
        plan.mkdirs.append(alloc.id)
        plan.files.append(credentials_file(alloc.id, ctx.access))
        if alloc.id != submit_row_id(alloc):
            continue  # a GPU slot: its group's job script lives in slot 0's folder (ADR 0026)
        folder = alloc_dir(profile.scratch, alloc.id)
        args = worker_args(profile.scratch, alloc.id, ctx.worker)
        script = scheduler.render_job_script(alloc, profile, args)
        plan.files.append(
            FileWrite(allocation_id=alloc.id, name=JOB_SCRIPT, data=script.encode(), mode=0o700)
        )
        plan.submits.append(
            SubmitCommand(
                allocation_id=alloc.id,
                snippet=scheduler.submit_snippet(alloc, f"{folder}/{JOB_SCRIPT}"),
                also_needs=_other_slots(alloc),
            )
        )


def _other_slots(alloc: Allocation) -> list[str]:
    """The group's other slot rows: one SLURM job starts a worker in each of their folders."""
    if alloc.group_id is None:
        return []
    return [slot_allocation_id(alloc.group_id, i) for i in range(1, alloc.slot_count)]


def submit_row_id(alloc: Allocation) -> str:
    """The row whose folder holds the job script and whose id the submit reports."""
    return slot_allocation_id(alloc.group_id, 0) if alloc.group_id else alloc.id


def _slot_files(plan: WritePlan, alloc: Allocation, beat: Heartbeat | None) -> None:
    """A GPU slot's kill, hold or its removal (ADR 0026)."""
    if alloc.kill_requested_at is not None:
        plan.files.append(slot_control_file(alloc, ControlAction.KILL, "hung: killed alone"))
    elif hold_needed(alloc, beat):
        why = f"GPU lent to slot {alloc.held_by}"
        plan.files.append(slot_control_file(alloc, ControlAction.HOLD, why))
        # A held slot has no job: an assignment still there (a withdrawn successor its worker
        # had not read) must never run beside the lead's engine.
        plan.removals.append(FileRemoval(allocation_id=alloc.id, name=ASSIGNMENT_FILE))
    elif unhold_needed(alloc, beat):
        plan.removals.append(FileRemoval(allocation_id=alloc.id, name=CONTROL_FILE))


def _plan_mailbox(
    plan: WritePlan, allocs: list[Allocation], jobs: dict[str, Job], snapshot: ClusterSnapshot
) -> None:
    devices = _group_devices(allocs)
    for alloc in allocs:
        if alloc.state is AllocationState.ENDED or alloc.state is AllocationState.SUBMITTING:
            continue
        files = snapshot.files.get(alloc.id)
        beat = files.heartbeat if files else None
        job = jobs.get(alloc.job_id or "")
        if alloc.group_id is not None:
            _slot_files(plan, alloc, beat)
            if alloc.kill_requested_at is not None:
                continue
        if alloc.stop_requested_at is not None:
            if control_needed(beat):
                plan.files.append(control_file(alloc, job))
            continue
        successor = jobs.get(alloc.reserved_job_id or "")
        if successor is not None and successor_needed(alloc, beat):
            plan.files.append(successor_file(alloc, successor))
        elif withdrawal_needed(alloc, job, beat):
            plan.removals.append(FileRemoval(allocation_id=alloc.id, name=ASSIGNMENT_FILE))
        if (
            job is not None
            and job.allocation_id == alloc.id
            and job.state is JobState.ASSIGNED
            # A worker still waiting on its gate gets the committed, ungated assignment.
            and (
                assignment_needed(job, beat)
                or (beat is not None and beat.awaiting_handoff_of is not None)
            )
        ):
            plan.files.append(assignment_file(alloc, job, devices.get(alloc.id)))


def _group_devices(allocs: list[Allocation]) -> dict[str, list[int]]:
    """Lead slot id -> the slots its multi-GPU job runs on, the lead's own first."""
    held: dict[str, list[int]] = {}
    by_id = {a.id: a for a in allocs}
    for alloc in allocs:
        lead = by_id.get(alloc.held_by or "")
        if lead is not None and alloc.state is not AllocationState.ENDED:
            held.setdefault(lead.id, [lead.slot]).append(alloc.slot)
    return {lead: [slots[0], *sorted(slots[1:])] for lead, slots in held.items()}


def plan_write(scope: CycleScope, committed: Committed, snapshot: ClusterSnapshot) -> WritePlan:
    d, carried, scheduler = committed.decisions, scope.carried, scope.scheduler
    plan = WritePlan()
    _plan_submits(plan, d.new_allocations, scope.ctx, scope.profile, scheduler)
    _plan_mailbox(plan, committed.allocations, committed.jobs, snapshot)
    carried.credentials_owed.update(
        a.id for a in d.allocations.values() if a.state is AllocationState.ENDED
    )
    plan.removals.extend(
        FileRemoval(allocation_id=alloc_id, name=CREDENTIALS_FILE)
        for alloc_id in sorted(carried.credentials_owed)
    )
    if d.cancel:
        plan.cancel_snippet = scheduler.cancel_snippet(sorted(set(d.cancel.values())))
    return plan


async def write_cluster(scope: CycleScope, committed: Committed, snapshot: ClusterSnapshot) -> None:
    ctx, profile, carried = scope.ctx, scope.profile, scope.carried
    plan = plan_write(scope, committed, snapshot)
    if plan.empty:
        return
    if plan.submits:
        _maybe_crash("before_submit_write")
    # On a transport error unconfirmed submits stay `submitting`: the next read adopts
    # them by job name or drops them.
    outcome = await scope.carrier.write(plan, parse_submit=scope.scheduler.parse_submit)
    if plan.submits:
        _maybe_crash("after_submit_write")
    if outcome.complete:
        carried.credentials_owed.difference_update(
            r.allocation_id for r in plan.removals if r.name == CREDENTIALS_FILE
        )
    if committed.decisions.new_allocations:
        async with ctx.store_lock, ctx.store.transaction():
            for alloc in committed.decisions.new_allocations:
                await _record_submit(ctx, profile.name, carried, alloc, outcome)
    if outcome.failed_files or outcome.failed_dirs:
        log.warning(
            "mailbox_write_failed",
            cluster=profile.name,
            files=outcome.failed_files,
            dirs=outcome.failed_dirs,
        )


async def _record_submit(
    ctx: DaemonContext,
    cluster: str,
    carried: CarriedState,
    alloc: Allocation,
    outcome: WriteResult,
) -> None:
    """Commit what one submit returned: `pending` with its scheduler id, or ended."""
    store = ctx.store
    sub = outcome.submits.get(submit_row_id(alloc))  # one submit per GPU group (ADR 0026)
    if sub is not None and sub.scheduler_id:
        current = await store.get_allocation(alloc.id)
        if current is not None and current.state is AllocationState.SUBMITTING:
            await store.update_allocation(
                current.model_copy(
                    update={"state": AllocationState.PENDING, "scheduler_id": sub.scheduler_id}
                )
            )
        await record_event(
            store,
            cluster,
            "allocation_submitted",
            f"scheduler job {sub.scheduler_id}",
            allocation_id=alloc.id,
            scheduler_id=sub.scheduler_id,
        )
    elif sub is not None or outcome.complete:
        error = ((sub.error if sub is not None else None) or "no submit result")[:500]
        carried.credentials_owed.add(alloc.id)  # written for a worker that never runs
        await store.update_allocation(
            alloc.model_copy(
                update={
                    "state": AllocationState.ENDED,
                    "ended_at": utcnow(),
                    "end_reason": f"submit failed: {error}"[:500],
                }
            )
        )
        await record_event(
            store,
            cluster,
            "allocation_submit_failed",
            error,
            allocation_id=alloc.id,
            warn=True,
            error=error,
        )
