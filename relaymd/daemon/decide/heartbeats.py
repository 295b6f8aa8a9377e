"""Liveness of running allocations from their heartbeats, on the daemon's clock (invariant 5),
and the stop grace: a worker told to stop that does not is cancelled.
"""

from __future__ import annotations

from typing import Any

from relaymd.daemon.classify import classify_hung, classify_stop_timeout
from relaymd.daemon.decide import slots
from relaymd.daemon.decide.cycle import Cycle
from relaymd.daemon.liveness import (
    heartbeat_counts,
    is_stale,
    liveness_reference,
    observe_heartbeat,
    unheard_note,
)
from relaymd.mailbox.carrier import AllocationFiles
from relaymd.mailbox.models import Heartbeat, WorkerState
from relaymd.models import Allocation, AllocationState, Job, JobState
from relaymd.models.base import copy_with


def liveness(cycle: Cycle, alloc: Allocation, files: AllocationFiles | None) -> Allocation:
    """Note a moving heartbeat, copy its progress to the job, stop a hung worker."""
    heartbeat = files.heartbeat if files else None
    job = cycle.bound_job(alloc)  # observing a heartbeat changes neither id nor binding
    # Only a heartbeat of the allocation's current assignment proves it alive (an idle one
    # for an unbound allocation, or the pre-written one of a reserved successor): a moving
    # seq for another job or epoch is no news. An unmoved seq is no news whoever it names,
    # so the common case skips the check.
    if (
        heartbeat is not None
        and heartbeat.seq != alloc.last_seq
        and heartbeat_counts(alloc.id, job, heartbeat, alloc.reservation)
    ):
        alloc = _observed(cycle, alloc, heartbeat)
    if heartbeat is not None and job is not None:
        _progress(cycle, job, heartbeat)
    not_before = cycle.inp.daemon_started_at
    if (
        alloc.state is AllocationState.RUNNING
        and alloc.stop_requested_at is None
        and is_stale(alloc, cycle.now, cycle.inp.settings.stale_after_s, not_before=not_before)
    ):
        counted = heartbeat_counts(alloc.id, job, heartbeat, alloc.reservation)
        alloc = _stop_hung(cycle, alloc, files, None if counted else heartbeat)
    return alloc


def _observed(cycle: Cycle, alloc: Allocation, heartbeat: Heartbeat) -> Allocation:
    """The allocation with its heartbeat's moved seq (and GPUs) noted in the cycle."""
    observed = observe_heartbeat(alloc, heartbeat, cycle.now)
    if observed.gpus == alloc.gpus:
        cycle.put_news_alloc(observed)
    else:
        cycle.put_alloc(observed)
    return observed


def _progress(cycle: Cycle, job: Job, heartbeat: Heartbeat) -> None:
    """The bound job's steps and speed from its own running heartbeat; it has started."""
    if (
        heartbeat.job_id != job.id
        or heartbeat.epoch != job.epoch
        or heartbeat.state is not WorkerState.RUNNING
    ):
        return
    update: dict[str, Any] = {
        "total_steps": heartbeat.total_steps,
        "ns_per_day": heartbeat.ns_per_day,
    }
    if job.state is JobState.ASSIGNED:
        update["state"] = JobState.RUNNING
    if (
        job.total_steps != heartbeat.total_steps
        or job.ns_per_day != heartbeat.ns_per_day
        or "state" in update
    ):
        # Changed by construction: one copy, stamped here, not compared again by put_job.
        update["updated_at"] = cycle.now
        changed = copy_with(job, update)
        if "state" in update:
            cycle.put_stamped_job(changed)
        else:
            cycle.put_news_job(changed)


def _stop_hung(
    cycle: Cycle, alloc: Allocation, files: AllocationFiles | None, unheard: Heartbeat | None
) -> Allocation:
    """Stop a worker whose seq has not moved for too long and requeue its job (fenced)."""
    since = liveness_reference(alloc, not_before=cycle.inp.daemon_started_at)
    oversized = bool(files and files.heartbeat_oversized)
    stale_for = (cycle.now - since).total_seconds() if since else 0.0
    alloc = cycle.stop_worker(
        alloc,
        "worker_hung",
        f"heartbeat seq {alloc.last_seq} unchanged for {stale_for:.0f}s"
        f"{unheard_note(unheard, oversized)}; stopping",
        job_id=alloc.job_id,
    )
    job = cycle.bound_job(alloc)
    if job is not None:
        cycle.apply_outcome(job, alloc, classify_hung(job, stale_for))
        alloc = cycle.allocs[alloc.id]
    return alloc


def stop_grace(cycle: Cycle, alloc: Allocation) -> None:
    """Cancel an allocation whose worker was told to stop and has not, after the grace."""
    if alloc.stop_requested_at is None or alloc.state is AllocationState.ENDED:
        return
    waited = (cycle.now - alloc.stop_requested_at).total_seconds()
    if waited < cycle.inp.settings.stop_grace_s:
        return
    job = cycle.bound_job(alloc)
    if job is not None:
        cycle.apply_outcome(job, alloc, classify_stop_timeout(job))
    # A slot of a group whose other slots still work gets a `kill` instead (ADR 0026).
    slots.cancel_or_kill(cycle, cycle.allocs[alloc.id], f"no stop after {waited:.0f}s")
