"""Idle allocations: release those nothing will use, keep warm those the daemon expects to
bind, and reserve one as the pre-written successor of a job about to hand off (ADR 0009).

Phases of one cluster's cycle (relaymd.daemon.decide calls them on its working copies):
* `reservation_before_events` — for an allocation reserved as a successor, before its events:
  activate it (bind the job at the reserved epoch) when the predecessor's handoff was
  applied in this cycle, keep waiting while the predecessor still runs, or withdraw it.
* `successor_demand` — for provisioning: a job whose handoff is due within one poll more
  than the reservation window needs an allocation running by then (submitted if no spare).
* `reserve_successors` — after late binding: a job whose handoff is due within the poll
  interval plus `prewrite_lead_s` gets an idle allocation of this cluster reserved for it.
* `release_idle` — an idle worker that no queued job and no soon-to-hand-off job can use is
  told to stop (and its allocation ends); the others carry a note saying why they stay.

A reservation is only made on the cluster where the job runs: one read then sees both the
predecessor's handoff and the successor's first events, and the reserved allocation is
decided after the predecessor's so those events are never fenced out.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from relaymd.daemon.assign import score
from relaymd.daemon.decide.cycle import Cycle
from relaymd.daemon.eligibility import fits_allocation, time_for_a_segment
from relaymd.daemon.liveness import heartbeat_counts, is_stale, observe_heartbeat
from relaymd.daemon.provision import ClusterMode, is_spare
from relaymd.mailbox.carrier import AllocationFiles
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerState
from relaymd.models import Allocation, AllocationState, Job, JobState
from relaymd.models.job import JobEpoch

# How long after the predecessor's deadline a gated assignment is still worth waiting on.
GATE_SLACK_S = 60.0
RELEASE_NOTE = "releasing: no work"


def handoff_due_at(beat: Heartbeat | None) -> datetime | None:
    """When the worker will start its planned handoff (deadline - margin), if it has one."""
    if beat is None or beat.deadline is None:
        return None
    return beat.deadline - timedelta(seconds=beat.handoff_margin_s or 0.0)


def _room_after(beat: Heartbeat, at: datetime) -> float:
    """Seconds of segment the worker could run if it started at `at`."""
    due = handoff_due_at(beat)
    return float("inf") if due is None else (due - at).total_seconds()


def _beat(files: dict[str, AllocationFiles], alloc_id: str) -> Heartbeat | None:
    got = files.get(alloc_id)
    return got.heartbeat if got else None


def _idle_worker(cycle: Cycle, alloc: Allocation, beat: Heartbeat | None) -> bool:
    return (
        alloc.state is AllocationState.RUNNING
        and is_spare(alloc)
        and beat is not None
        and beat.state is WorkerState.IDLE
        and beat.job_id is None
        and not is_stale(alloc, cycle.now, cycle.inp.settings.stale_after_s)
    )


# -- reservations -------------------------------------------------------------------------


def reservation_before_events(
    cycle: Cycle, alloc: Allocation, files: AllocationFiles | None
) -> tuple[Allocation, bool]:
    """(allocation, hold its events back this cycle) for a reserved allocation."""
    reserved = alloc.reservation
    if reserved is None:
        return alloc, False
    job, epoch = cycle.jobs.get(reserved.job_id), reserved.epoch
    # Judged on the heartbeat read in this cycle (liveness records it only after the events):
    # with a poll longer than stale_after_s the last recorded seq is always "too old".
    beat = files.heartbeat if files else None
    counted = heartbeat_counts(alloc.id, None, beat, reserved)
    fresh = observe_heartbeat(alloc, beat if counted else None, cycle.now)
    alive = (
        alloc.state is AllocationState.RUNNING
        and alloc.stop_requested_at is None
        and alloc.end_reason is None
        and not is_stale(
            fresh,
            cycle.now,
            cycle.inp.settings.stale_after_s,
            not_before=cycle.inp.daemon_started_at,
        )
    )
    if (
        alive
        and job is not None
        and JobEpoch(job.id, epoch - 1) in cycle.handed_off
        and job.state is JobState.QUEUED
        and job.operator_request is None
        and job.epoch == epoch - 1
        and job.prewritten_epoch == epoch
    ):
        return _activate(cycle, alloc, job, epoch), False
    if (
        alive
        and job is not None
        and job.state.on_allocation
        and job.operator_request is None
        and job.epoch == epoch - 1
        and job.allocation_id is not None
        and job.allocation_id != alloc.id
    ):
        # Still waiting. Events of the reserved epoch (the worker found the handoff marker
        # before this read saw the handoff event) wait for the cycle that activates it.
        hold = files is not None and any(
            e.job_id == job.id and e.epoch == epoch for e in files.events
        )
        return alloc, hold
    return _withdraw(cycle, alloc, job, epoch, files), False


def _why_withdrawn(cycle: Cycle, alloc: Allocation, job: Job | None, epoch: int) -> str:
    if job is None or job.state.is_final:
        state = job.state.value if job else "gone"
        return f"job {alloc.reserved_job_id} is {state}"
    if job.operator_request is not None:
        return f"operator {job.operator_request.value} on job {job.id}"
    if alloc.state is not AllocationState.RUNNING or alloc.end_reason:
        return "the reserved allocation is leaving"
    if alloc.stop_requested_at is not None:
        return "the reserved allocation is being stopped"
    if job.epoch != epoch - 1:
        return f"job {job.id} moved to epoch {job.epoch}"
    if job.state is JobState.QUEUED:
        return f"epoch {epoch - 1} of job {job.id} ended without a handoff"
    return "the reserved worker stopped answering"


def _withdraw(
    cycle: Cycle, alloc: Allocation, job: Job | None, epoch: int, files: AllocationFiles | None
) -> Allocation:
    reason = _why_withdrawn(cycle, alloc, job, epoch)
    update: dict[str, Any] = {
        "reserved_job_id": None,
        "reserved_epoch": None,
        "reserved_until": None,
        "note": None,
    }
    beat = files.heartbeat if files else None
    started = (
        beat is not None
        and beat.job_id == alloc.reserved_job_id
        and beat.epoch == epoch
        and beat.state in (WorkerState.RUNNING, WorkerState.STOPPING)
    ) or (
        files is not None
        and any(
            e.kind is EventKind.STARTED and e.job_id == alloc.reserved_job_id and e.epoch == epoch
            for e in files.events
        )
    )
    if started and alloc.stop_requested_at is None and alloc.state is AllocationState.RUNNING:
        # It already runs the fenced epoch (nothing it writes counts): stop it.
        update["stop_requested_at"] = cycle.now
    alloc = alloc.model_copy(update=update)
    cycle.put_alloc(alloc)
    cycle.audit(
        "successor_withdrawn",
        f"pre-written epoch {epoch} withdrawn: {reason}" + ("; stopping it" if started else ""),
        job_id=job.id if job else None,
        alloc_id=alloc.id,
    )
    return alloc


def _activate(cycle: Cycle, alloc: Allocation, job: Job, epoch: int) -> Allocation:
    """Commit the reserved epoch: the same binding late binding would make, at the epoch
    already written in the allocation's assignment."""
    job = cycle.start_epoch(job, alloc, epoch)
    alloc = alloc.model_copy(
        update={
            "job_id": job.id,
            "reserved_job_id": None,
            "reserved_epoch": None,
            "reserved_until": None,
            "note": None,
        }
    )
    cycle.put_alloc(alloc)
    cycle.out.activated.append(job.id)
    cycle.audit(
        "successor_activated",
        f"epoch {epoch} on {alloc.cluster}/{alloc.partition} (pre-written, after the handoff"
        f" of epoch {epoch - 1})",
        job_id=job.id,
        alloc_id=alloc.id,
    )
    return alloc


def _handoff_within(
    cycle: Cycle, job: Job, files: dict[str, AllocationFiles], reserved: set[str], window_s: float
) -> tuple[Allocation, Heartbeat, datetime] | None:
    """(holder, its heartbeat, handoff due) for a running job of this cluster that will hand
    off within `window_s` and has no successor reserved yet."""
    holder = cycle.allocs.get(job.allocation_id or "")
    if (
        job.state is not JobState.RUNNING
        or job.operator_request is not None
        or job.id in reserved
        or job.prewritten_epoch > job.epoch  # one pre-written successor per epoch
        or holder is None
        or holder.job_id != job.id
        or holder.stop_requested_at is not None
        or holder.end_reason is not None
    ):
        return None
    beat = _beat(files, holder.id)
    if beat is None or beat.job_id != job.id or beat.epoch != job.epoch:
        return None
    due = handoff_due_at(beat)
    if due is None or (due - cycle.now).total_seconds() > window_s:
        return None
    return holder, beat, due


def successor_demand(cycle: Cycle, files: dict[str, AllocationFiles]) -> list[Job]:
    """Running jobs of this cluster that provisioning should find an allocation for now, so
    that one is running idle when they hand off.

    The window is one poll longer than the reservation's: an allocation submitted in this
    cycle has started and written its first heartbeat by the next one, which pre-writes the
    successor before the handoff (ADR 0009). An idle or pending spare already counts as
    supply, so each job causes at most one such allocation.
    """
    window_s = 2 * cycle.inp.profile.poll.max_interval_s + cycle.inp.settings.prewrite_lead_s
    reserved = {a.reserved_job_id for a in cycle.allocs.values() if a.reserved_job_id}
    return [
        job
        for job in sorted(cycle.jobs.values(), key=lambda j: j.id)
        if _handoff_within(cycle, job, files, reserved, window_s) is not None
    ]


def reserve_successors(cycle: Cycle, files: dict[str, AllocationFiles]) -> None:
    settings = cycle.inp.settings
    window_s = cycle.inp.profile.poll.max_interval_s + settings.prewrite_lead_s
    if not any(_idle_worker(cycle, a, _beat(files, a.id)) for a in cycle.allocs.values()):
        return  # no idle worker to reserve: the per-job search would find nothing
    reserved = {a.reserved_job_id for a in cycle.allocs.values() if a.reserved_job_id}
    for job in sorted(cycle.jobs.values(), key=lambda j: j.id):
        due_holder = _handoff_within(cycle, job, files, reserved, window_s)
        if due_holder is None:
            continue
        holder, beat, due = due_holder
        candidates = [
            a
            for a in cycle.allocs.values()
            if a.id != holder.id
            and _idle_worker(cycle, a, b := _beat(files, a.id))
            and b is not None
            and _room_after(b, due) >= settings.min_segment_s
            and fits_allocation(job, a, cycle.inp.profile)
        ]
        if not candidates:
            continue
        best = max(candidates, key=lambda a: (score(job, a, cycle.inp.profile), a.id))
        epoch = job.epoch + 1
        assert beat.deadline is not None
        in_s = max(0.0, (due - cycle.now).total_seconds())
        cycle.put_alloc(
            best.model_copy(
                update={
                    "reserved_job_id": job.id,
                    "reserved_epoch": epoch,
                    "reserved_until": beat.deadline + timedelta(seconds=GATE_SLACK_S),
                    "note": f"reserved for job {job.id} epoch {epoch}: handoff due in ~{in_s:.0f}s",
                }
            )
        )
        cycle.put_job(job.model_copy(update={"prewritten_epoch": epoch}))
        reserved.add(job.id)
        cycle.audit(
            "successor_reserved",
            f"epoch {epoch} pre-written to {best.id}; handoff of epoch {job.epoch} due in"
            f" ~{in_s:.0f}s",
            job_id=job.id,
            alloc_id=best.id,
        )


# -- release ------------------------------------------------------------------------------


def _expected_handoff(cycle: Cycle, job: Job, files: dict[str, AllocationFiles]) -> datetime | None:
    """When a running job will next need an allocation: its worker's planned handoff, or (for
    a worker on another cluster, whose heartbeat this cycle did not read) its walltime end."""
    holder = cycle.allocs.get(job.allocation_id or "") or next(
        (a for a in cycle.inp.all_live if a.id == job.allocation_id), None
    )
    if holder is None:
        return None
    beat = _beat(files, holder.id)
    if beat is not None and beat.job_id == job.id:
        due = handoff_due_at(beat)
        if due is not None:
            return due
    if holder.started_at is None:
        return None
    return holder.started_at + timedelta(seconds=holder.walltime_s)


def _keep_reason(
    cycle: Cycle,
    alloc: Allocation,
    beat: Heartbeat,
    files: dict[str, AllocationFiles],
    claimed: set[str],
) -> tuple[str, str] | None:
    """(job id, why) for a job this idle allocation is kept warm for; None: release it."""
    settings = cycle.inp.settings
    if not time_for_a_segment(beat, cycle.now, settings.min_segment_s):
        return None
    profile = cycle.inp.profile
    for job in sorted(cycle.jobs.values(), key=lambda j: j.id):
        if job.id in claimed or not fits_allocation(job, alloc, profile):
            continue
        if job.state is JobState.QUEUED and job.operator_request is None:
            return job.id, f"warm for queued job {job.id}"
        if not job.state.on_allocation or job.operator_request:
            continue
        due = _expected_handoff(cycle, job, files)
        if due is None or _room_after(beat, due) < settings.min_segment_s:
            continue
        in_s = max(0.0, (due - cycle.now).total_seconds())
        return job.id, f"warm for job {job.id} handing off in ~{in_s:.0f}s"
    return None


def release_idle(cycle: Cycle, files: dict[str, AllocationFiles]) -> None:
    """Stop idle workers nothing will use; note why the others stay."""
    claimed = {a.reserved_job_id for a in cycle.allocs.values() if a.reserved_job_id}
    for alloc in sorted(cycle.allocs.values(), key=lambda a: (a.submitted_at, a.id)):
        if alloc.job_id is not None or alloc.state is AllocationState.ENDED:
            if alloc.note is not None and alloc.state is not AllocationState.ENDED:
                cycle.put_alloc(alloc.model_copy(update={"note": None}))
            continue
        beat = _beat(files, alloc.id)
        if alloc.reserved_job_id is not None or not _idle_worker(cycle, alloc, beat):
            continue
        assert beat is not None
        # A disabled cluster binds nothing: its idle workers have no future there.
        disabled = cycle.inp.mode is ClusterMode.DISABLED
        keep = None if disabled else _keep_reason(cycle, alloc, beat, files, claimed)
        if keep is not None:
            claimed.add(keep[0])
            if alloc.note != keep[1]:
                cycle.put_alloc(alloc.model_copy(update={"note": keep[1]}))
            continue
        cycle.put_alloc(
            alloc.model_copy(
                update={
                    "stop_requested_at": cycle.now,
                    "end_reason": "released: no work",
                    "note": RELEASE_NOTE,
                }
            )
        )
        cycle.audit(
            "allocation_release", "idle and no job can use it: stop sent", alloc_id=alloc.id
        )
