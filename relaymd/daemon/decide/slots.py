"""GPU slots in a cycle (ADR 0026): a slot row ends on its own `slot_exited` event, a cancel
aimed at one slot of a working group becomes a `kill`, jobs that need k GPUs bind to a lead
slot with k-1 held ones, and held slots are freed once their lead's job leaves.
"""

from __future__ import annotations

from relaymd.daemon.decide.cycle import Cycle
from relaymd.daemon.decide.scheduler_view import SchedulerEnd
from relaymd.daemon.eligibility import fits_allocation, is_slot, job_order_key, slot_need
from relaymd.daemon.slot_packing import group_slots
from relaymd.mailbox.carrier import AllocationFiles
from relaymd.mailbox.models import EventKind
from relaymd.models import Allocation, AllocationState, Job


def exited(cycle: Cycle, alloc: Allocation, files: AllocationFiles | None) -> SchedulerEnd | None:
    """The end of a slot whose worker process exited (the supervisor's `slot_exited` event):
    exit code 0 like a completed allocation (the worker's own events explain it), anything
    else like a failed one (a killed worker)."""
    if files is None or not is_slot(alloc):
        return None
    for event in files.events:
        if event.kind is not EventKind.SLOT_EXITED or event.allocation_id != alloc.id:
            continue
        if alloc.state is not AllocationState.RUNNING:
            # No supervisor runs before the scheduler starts the group: forged or stale.
            cycle.audit(
                "slot_exit_ignored",
                f"slot_exited in events.jsonl while the scheduler has not started"
                f" {alloc.scheduler_key} ({alloc.state.value})",
                alloc_id=alloc.id,
            )
            continue
        code = event.exit_code
        return SchedulerEnd("COMPLETED" if code == 0 else "FAILED", str(code))
    return None


def _group_has_work(cycle: Cycle, alloc: Allocation) -> bool:
    """Another live slot of `alloc`'s group runs, holds or awaits a job."""
    return any(
        other.id != alloc.id
        and other.scheduler_key == alloc.scheduler_key
        and other.state is not AllocationState.ENDED
        and (other.job_id is not None or other.held_by is not None or other.reserved_job_id)
        for other in cycle.allocs.values()
    )


def cancel_or_kill(cycle: Cycle, alloc: Allocation, why: str) -> None:
    """End an allocation whose worker will not stop: scancel it, or, for a slot of a group
    whose other slots still work, have the supervisor SIGKILL that slot's worker alone."""
    if alloc.id in cycle.out.cancel or not alloc.scheduler_id:
        return
    if is_slot(alloc) and _group_has_work(cycle, alloc):
        if alloc.kill_requested_at is None:
            cycle.put_alloc(alloc.model_copy(update={"kill_requested_at": cycle.now}))
            cycle.audit("slot_kill", f"{why}: kill sent to this slot alone", alloc_id=alloc.id)
        return
    cycle.out.cancel[alloc.id] = alloc.scheduler_id
    cycle.audit("allocation_cancel", why, alloc_id=alloc.id)


def _lead_engine_may_run(lead: Allocation | None) -> bool:
    """A lead told to stop (hung, operator) that has not said it is leaving may still run
    its engine on the held GPUs: they stay held until its worker exits or reports."""
    return (
        lead is not None
        and lead.state is not AllocationState.ENDED
        and lead.stop_requested_at is not None
        and lead.end_reason is None
    )


def free_held(cycle: Cycle) -> None:
    """Held slots whose lead no longer runs a multi-GPU job are free again, in the cycle the
    job left it (handoff, end, failure), so no two engines ever share a GPU."""
    for alloc in list(cycle.allocs.values()):
        if alloc.held_by is None or alloc.state is AllocationState.ENDED:
            continue
        lead = cycle.allocs.get(alloc.held_by)
        job = cycle.bound_job(lead) if lead is not None else None
        if (job is not None and slot_need(job) > 1) or _lead_engine_may_run(lead):
            continue
        cycle.put_alloc(alloc.model_copy(update={"held_by": None}))
        cycle.audit("slot_freed", f"no longer held for {alloc.held_by}", alloc_id=alloc.id)


def bind_groups(
    cycle: Cycle, idle: list[Allocation], queued: list[Job]
) -> tuple[set[str], set[str]]:
    """Bind each queued job that needs k > 1 GPUs to a lead slot of one group with k-1 other
    idle slots (all measured to fit), holding those: (slot ids used, job ids bound). Priority
    holds: a multi-GPU job leaves as many idle workers as one-GPU jobs ahead of it can use."""
    profile = cycle.inp.profile
    free = [a for a in idle if is_slot(a)]
    used: set[str] = set()
    bound: set[str] = set()
    singles_ahead = 0
    for job in sorted(queued, key=job_order_key):
        if slot_need(job) < 2:
            singles_ahead += any(fits_allocation(job, a, profile) for a in idle)
            continue
        if len(idle) - len(used) - slot_need(job) < singles_ahead:
            continue

        def member_fits(a: Allocation, job: Job = job) -> bool:
            return fits_allocation(job, a, profile, group_member=True)

        members = group_slots(job, (a for a in free if a.id not in used), member_fits)
        if members is None:
            continue
        lead = members[0]
        epoch = max(job.epoch, job.prewritten_epoch) + 1
        job = cycle.start_epoch(job, lead, epoch, held=[a.id for a in members[1:]])
        cycle.put_alloc(lead.model_copy(update={"job_id": job.id}))
        for held in members[1:]:
            cycle.put_alloc(held.model_copy(update={"held_by": lead.id, "note": None}))
        cycle.out.bound.append(job.id)
        used.update(a.id for a in members)
        bound.add(job.id)
        cycle.audit(
            "job_assigned",
            f"epoch {epoch} on {lead.cluster}/{lead.partition}, GPU slots"
            f" {', '.join(str(a.slot) for a in members)} of {lead.scheduler_key}",
            job_id=job.id,
            alloc_id=lead.id,
        )
    return used, bound
