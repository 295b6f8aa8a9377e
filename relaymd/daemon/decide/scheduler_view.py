"""The scheduler's view of an allocation: adopt, start and end it; cancel orphans.

Absent from squeue is not finished (invariant 5): an allocation the scheduler no longer
lists ends only when sacct or the worker's events explain it, or after a grace period.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from relaymd.daemon.classify import classify_allocation_end
from relaymd.daemon.decide.cycle import Cycle
from relaymd.mailbox.carrier import AllocationFiles
from relaymd.models import Allocation, AllocationState
from relaymd.scheduler.base import SchedulerJob, SchedulerPhase


class SchedulerEnd(NamedTuple):
    """How an allocation ended as far as the scheduler says (None: vanished, not reported)."""

    state: str | None
    exit_code: str | None


def scheduler_job(cycle: Cycle, scheduler_key: str) -> SchedulerJob | None:
    """The scheduler's report by the id its job name carries (a GPU slot's: its group's)."""
    found: SchedulerJob | None = cycle.inp.snapshot.scheduler_jobs.get(scheduler_key)
    return found


def observe(cycle: Cycle, alloc: Allocation) -> Allocation:
    """Adopt, start or end the allocation from the scheduler's report."""
    sj = scheduler_job(cycle, alloc.scheduler_key)
    if sj is None:
        return alloc
    update: dict[str, Any] = {}
    if sj.scheduler_id and alloc.scheduler_id != sj.scheduler_id:
        update["scheduler_id"] = sj.scheduler_id
        if alloc.state is AllocationState.SUBMITTING:
            cycle.audit(
                "allocation_adopted",
                f"found as scheduler job {sj.scheduler_id} after an unconfirmed submit",
                alloc_id=alloc.id,
            )
    if sj.phase is SchedulerPhase.PENDING and alloc.state is AllocationState.SUBMITTING:
        update["state"] = AllocationState.PENDING
    elif sj.phase is SchedulerPhase.RUNNING and alloc.state in (
        AllocationState.SUBMITTING,
        AllocationState.PENDING,
    ):
        update["state"] = AllocationState.RUNNING
        update["started_at"] = cycle.now
        cycle.audit("allocation_running", f"running on {sj.node or '?'}", alloc_id=alloc.id)
    if update:
        alloc = alloc.model_copy(update=update)
        cycle.put_alloc(alloc)
    return alloc


def ended(cycle: Cycle, alloc: Allocation) -> SchedulerEnd | None:
    """How the allocation ended, or None while it has not; vanished counts as ended."""
    sj = scheduler_job(cycle, alloc.scheduler_key)
    if sj is not None:
        if sj.phase is not SchedulerPhase.ENDED:
            return None
        end = sj.end_state
        return SchedulerEnd(str(end) if end is not None else None, sj.exit_code)
    if alloc.state is AllocationState.SUBMITTING:
        # Never seen by the scheduler: give an interrupted submit time to show up, then
        # drop the row (a later cycle provisions afresh; an orphan found later is cancelled).
        age = (cycle.now - alloc.submitted_at).total_seconds()
        return SchedulerEnd("NOT_SUBMITTED", None) if age >= cycle.inp.submit_grace_s else None
    if alloc.state is AllocationState.ENDED:
        return None
    # Absent from squeue is not finished (invariant 5): wait for sacct or the worker's
    # events to explain it, for a while, before calling it lost.
    since = cycle.inp.vanished_since.get(alloc.id, cycle.now)
    if (cycle.now - since).total_seconds() < cycle.inp.vanished_grace_s and (
        cycle.bound_job(alloc) is not None
    ):
        cycle.out.vanished_since[alloc.id] = since
        return None
    return SchedulerEnd(None, None)


def end(cycle: Cycle, alloc: Allocation, how: SchedulerEnd, files: AllocationFiles | None) -> None:
    """The allocation is over: classify its bound job's end, then close the row."""
    state = how.state
    job = cycle.bound_job(alloc)
    if job is not None:
        tail = files.log_tail if files and files.log_tail else []
        cycle.apply_outcome(job, alloc, classify_allocation_end(job, state, how.exit_code, tail))
        alloc = cycle.allocs[alloc.id]
        if not tail:
            cycle.out.want_log[alloc.id] = job.id
    reason = alloc.end_reason or (state or "vanished")
    cycle.put_alloc(
        alloc.model_copy(
            update={
                "state": AllocationState.ENDED,
                "ended_at": cycle.now,
                "reserved_job_id": None,
                "reserved_epoch": None,
                "note": None,
                "end_reason": f"{reason} ({state})" if state and state not in reason else reason,
            }
        )
    )
    cycle.audit("allocation_ended", f"ended: {state or 'vanished'}", alloc_id=alloc.id)


def cancel_orphans(cycle: Cycle) -> None:
    """Relaymd jobs the scheduler knows but the store does not (another state file, or a
    dropped submit that showed up late): cancel, never adopt twice."""
    inp = cycle.inp
    known = {a.scheduler_key for a in inp.allocations} | {a.scheduler_key for a in inp.all_live}
    for alloc_id in inp.snapshot.scheduler_jobs:
        sj = scheduler_job(cycle, alloc_id)
        if alloc_id in known or sj is None or sj.phase is SchedulerPhase.ENDED:
            continue
        if sj.scheduler_id:
            cycle.out.cancel[alloc_id] = sj.scheduler_id
            cycle.audit(
                "orphan_cancel", f"unknown scheduler job {sj.scheduler_id}", alloc_id=alloc_id
            )
