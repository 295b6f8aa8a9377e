"""The worker's events (events.jsonl), read after the scheduler's view so they explain an end.

An event counts only for the (job, epoch) bound to its allocation: a late write of an old
epoch is fenced and audited, never merged. A reported checkpoint moves the resume pointer
only when its manifest verified in storage (relaymd.daemon.evidence).
"""

from __future__ import annotations

from relaymd.daemon.classify import Verdict, classify_event
from relaymd.daemon.decide.cycle import Cycle
from relaymd.daemon.evidence import checkpoint_refusal, completion_refusal
from relaymd.daemon.retention import advance_pointer
from relaymd.mailbox.carrier import AllocationFiles
from relaymd.mailbox.models import EVENT_LINE_MAX_BYTES, EventKind, WorkerEvent
from relaymd.models import Allocation, CheckpointRef, Job, JobState
from relaymd.models.job import JobEpoch

_LEAVING_EVENTS = {
    EventKind.HANDOFF: "worker handed off",
    EventKind.STOPPED: "worker stopped",
    EventKind.IDLE_EXIT: "worker idle exit",
}


def apply(cycle: Cycle, alloc: Allocation, files: AllocationFiles) -> Allocation:
    """Apply this read's new events in order, then remember how far the file was read."""
    for event in files.events:
        alloc = _event(cycle, alloc, event)
    if (files.events_offset, files.events_skipping) != (
        alloc.events_offset,
        alloc.events_skipping,
    ):
        alloc = alloc.model_copy(
            update={
                "events_offset": files.events_offset,
                "events_skipping": files.events_skipping,
            }
        )
        cycle.put_alloc(alloc)
    if files.oversized_lines or files.unusable_lines:
        cycle.audit(
            "events_skipped",
            f"events.jsonl: skipped {files.oversized_lines} line(s) over"
            f" {EVENT_LINE_MAX_BYTES} bytes and {files.unusable_lines} unreadable line(s)",
            job_id=alloc.job_id,
            alloc_id=alloc.id,
        )
    return alloc


def _event(cycle: Cycle, alloc: Allocation, event: WorkerEvent) -> Allocation:
    if event.kind in _LEAVING_EVENTS and alloc.end_reason is None:
        alloc = alloc.model_copy(update={"end_reason": _LEAVING_EVENTS[event.kind]})
        cycle.put_alloc(alloc)
    if event.kind is EventKind.IDLE_EXIT or event.job_id is None:
        return alloc
    job = cycle.bound_job(alloc)
    if job is None or job.id != event.job_id or job.epoch != event.epoch:
        # A late write of an old epoch (or of a job moved elsewhere): fenced, never merged.
        cycle.audit(
            "stale_event_ignored",
            f"{event.kind.value} of epoch {event.epoch} ignored"
            f" (current epoch {job.epoch if job else 'none'})",
            job_id=event.job_id,
            alloc_id=alloc.id,
        )
        return alloc
    if event.kind is EventKind.STARTED:
        _started(cycle, job, alloc, event)
    elif event.kind is EventKind.CHECKPOINT and event.checkpoint is not None:
        claim(cycle, job, alloc, event.checkpoint)
    elif event.kind is EventKind.CHECKPOINT_FALLBACK:
        cycle.audit(
            "checkpoint_fallback",
            event.reason or "worker resumed from a fallback",
            job_id=job.id,
            alloc_id=alloc.id,
        )
    elif event.kind is EventKind.COMPLETED and not _completion_proven(cycle, job, alloc, event):
        return alloc  # not completion: the job keeps running (or requeues when it ends)
    else:
        alloc = _segment_end(cycle, job.id, alloc, event)
    return alloc


def _started(cycle: Cycle, job: Job, alloc: Allocation, event: WorkerEvent) -> None:
    cycle.segment_times(job, started=event.at)
    if job.state is JobState.ASSIGNED:
        cycle.put_job(job.model_copy(update={"state": JobState.RUNNING}))
    cycle.audit(
        "job_started",
        f"epoch {job.epoch} started (resumed from {event.resumed_from or 'start'})",
        job_id=job.id,
        alloc_id=alloc.id,
    )


def _segment_end(cycle: Cycle, job_id: str, alloc: Allocation, event: WorkerEvent) -> Allocation:
    """A terminal event of the bound epoch (handoff, stopped, failed, a proven completion)."""
    job = cycle.jobs[job_id]  # the completed event may have moved the pointer
    outcome = classify_event(job, event)
    if outcome is None:
        return alloc
    if (
        event.kind is EventKind.HANDOFF
        and outcome.verdict is Verdict.REQUEUE
        and event.checkpoint is not None
        and event.checkpoint == job.checkpoint
    ):
        cycle.handed_off.add(JobEpoch(job.id, job.epoch))
    if event.kind is EventKind.COMPLETED and job.checkpoint is not None:
        outcome.end_step = job.checkpoint.step  # the verified step, not the claim
    cycle.segment_times(job, ended=event.at)
    cycle.apply_outcome(job, alloc, outcome)
    return cycle.allocs[alloc.id]


def claim(cycle: Cycle, job: Job, alloc: Allocation, ref: CheckpointRef) -> bool:
    """Move the pointer to a reported checkpoint if it proves itself; audit if not."""
    inp = cycle.inp
    reason = checkpoint_refusal(job, ref, inp.verified, inp.rejected_claims)
    if reason is not None:
        cycle.audit(
            "checkpoint_rejected",
            f"checkpoint {ref.epoch}-{ref.seq} at {ref.prefix} rejected: {reason};"
            " pointer not moved",
            job_id=job.id,
            alloc_id=alloc.id,
        )
        return False
    cycle.put_job(advance_pointer(job, ref, inp.settings.retention_keep))
    cycle.out.checkpointed.append(job.id)
    return True


def _completion_proven(cycle: Cycle, job: Job, alloc: Allocation, event: WorkerEvent) -> bool:
    """A `completed` event counts only with a verified final checkpoint of this epoch."""
    ref, pointer = event.checkpoint, job.checkpoint
    unseen = ref is not None and (
        pointer is None or (ref.epoch, ref.seq) > (pointer.epoch, pointer.seq)
    )
    # A final checkpoint not reported by its own event yet: the same rules apply.
    if unseen and ref is not None and claim(cycle, job, alloc, ref):
        job = cycle.jobs[job.id]
    reason = completion_refusal(job, event)
    if reason is None:
        return True
    cycle.audit(
        "completion_rejected",
        f"completed event of epoch {job.epoch} at step {event.step} not believed: {reason}",
        job_id=job.id,
        alloc_id=alloc.id,
    )
    return False


def collect_log_tails(cycle: Cycle) -> None:
    """Keep the worker.log tail of a job whose allocation ended before it could be read."""
    files = cycle.inp.snapshot.files
    for alloc_id, job_id in cycle.inp.want_log.items():
        tail = files[alloc_id].log_tail if alloc_id in files else None
        job = cycle.jobs.get(job_id)
        if tail and job is not None and not job.log_tail:
            cycle.put_job(job.model_copy(update={"log_tail": tail}))
            cycle.audit(
                "log_tail_collected",
                f"{len(tail)} lines of worker.log",
                job_id=job_id,
                alloc_id=alloc_id,
            )
