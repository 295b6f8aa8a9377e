"""What a segment's end means for its job (docs/job-lifecycle.md).

Inputs are facts: a terminal worker event of the job's current epoch, or SLURM's end state of
the allocation when no such event exists, or the daemon's own verdict (hung worker, operator
request). Output is one `JobOutcome`. Pure: no I/O, no clock.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from relaymd.mailbox.models import EventKind, WorkerEvent
from relaymd.models import Job, OperatorRequest, SegmentOutcome

# SLURM ends that say nothing about the simulation: resume from the last checkpoint.
RESUMABLE_END_STATES = frozenset(
    {"TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "OUT_OF_MEMORY", "DEADLINE", "CANCELLED"}
)
# A worker dying without an event of its own (SIGKILL, node trouble) is resumable while the
# segment advanced the checkpoint; without progress the first death is still free, and each
# further one in a row spends a retry (a job that kills its worker every time must end).
LOSSES_WITHOUT_PROGRESS_BEFORE_RETRY = 2
TERMINAL_EVENTS = frozenset(
    {EventKind.HANDOFF, EventKind.COMPLETED, EventKind.FAILED, EventKind.STOPPED}
)


class Verdict(StrEnum):
    REQUEUE = "requeue"  # back to queued, resumes from the resume pointer under a new epoch
    COMPLETE = "complete"
    FAIL = "fail"
    CANCEL = "cancel"


class JobOutcome(BaseModel):
    verdict: Verdict
    segment: SegmentOutcome
    reason: str
    # True when this outcome spends one of the job's bounded application retries.
    counts_retry: bool = False
    log_tail: list[str] = Field(default_factory=list)
    end_step: int | None = None
    # The job's new count of unexplained worker deaths in a row without progress; None: kept
    # (or reset, when the segment advanced the checkpoint).
    losses_without_progress: int | None = None


def advanced_checkpoint(job: Job) -> bool:
    """The segment now ending moved the resume pointer (a verified checkpoint of its epoch)."""
    return job.checkpoint is not None and job.checkpoint.epoch == job.epoch


# What an operator's request makes of a segment's end: verdict, segment outcome, the word.
_OPERATOR_OUTCOMES = {
    OperatorRequest.CANCEL: (Verdict.CANCEL, SegmentOutcome.CANCELLED, "cancelled"),
    OperatorRequest.REQUEUE: (Verdict.REQUEUE, SegmentOutcome.STOPPED, "requeued"),
}


def _operator_outcome(job: Job, reason: str, end_step: int | None) -> JobOutcome | None:
    if job.operator_request is None:
        return None
    verdict, segment, done = _OPERATOR_OUTCOMES[job.operator_request]
    return JobOutcome(
        verdict=verdict,
        segment=segment,
        reason=f"{done} by operator ({reason})",
        end_step=end_step,
    )


# A worker's planned ends requeue the job from its checkpoint: the segment's outcome, what an
# operator's outcome calls the end, and the reason when the worker gave none.
_PLANNED_ENDS = {
    EventKind.HANDOFF: (SegmentOutcome.HANDOFF, "handoff", "handoff at allocation deadline"),
    EventKind.STOPPED: (SegmentOutcome.STOPPED, "worker stopped", "worker stopped"),
}


def classify_event(job: Job, event: WorkerEvent) -> JobOutcome | None:
    """Outcome of a terminal event of the job's current epoch; None for progress events."""
    if event.kind not in TERMINAL_EVENTS:
        return None
    step = event.checkpoint.step if event.checkpoint else event.step
    if event.kind is EventKind.COMPLETED:
        return JobOutcome(
            verdict=Verdict.COMPLETE,
            segment=SegmentOutcome.COMPLETED,
            reason="completed",
            end_step=event.step,
        )
    planned = _PLANNED_ENDS.get(event.kind)
    if planned is not None:
        segment, what, default_reason = planned
        operator = _operator_outcome(job, what, step)
        return operator or JobOutcome(
            verdict=Verdict.REQUEUE,
            segment=segment,
            reason=event.reason or default_reason,
            end_step=step,
        )
    # FAILED: resumable failures (lost upload, node trouble) requeue for free; application
    # failures spend a retry.
    operator = _operator_outcome(job, "worker failed", step)
    if operator is not None:
        return operator
    reason = event.reason or "worker reported a failure"
    if event.retryable:
        return JobOutcome(
            verdict=Verdict.REQUEUE,
            segment=SegmentOutcome.FAILED,
            reason=f"resumable failure: {reason}",
            log_tail=event.log_tail,
            end_step=step,
        )
    return application_failure(job, reason, event.log_tail, step)


def application_failure(
    job: Job, reason: str, log_tail: list[str], end_step: int | None = None
) -> JobOutcome:
    """Bounded retries: requeue while retries remain, then fail keeping reason and log tail."""
    retry = job.retries < job.spec.max_retries
    return JobOutcome(
        verdict=Verdict.REQUEUE if retry else Verdict.FAIL,
        segment=SegmentOutcome.FAILED,
        reason=(
            f"retry {job.retries + 1}/{job.spec.max_retries} after: {reason}"
            if retry
            else f"failed after {job.retries} retries: {reason}"
        ),
        counts_retry=retry,
        log_tail=log_tail,
        end_step=end_step,
    )


def _lost(reason: str, log_tail: list[str] | None = None) -> JobOutcome:
    """The allocation went away under the job: requeue from the checkpoint, no retry spent."""
    return JobOutcome(
        verdict=Verdict.REQUEUE, segment=SegmentOutcome.LOST, reason=reason, log_tail=log_tail or []
    )


def worker_lost(job: Job, reason: str, log_tail: list[str] | None = None) -> JobOutcome:
    """The worker died without saying why: free while it makes progress or the first time."""
    if advanced_checkpoint(job):
        outcome = _lost(
            f"{reason}; the segment advanced the checkpoint: resumable, no retry spent", log_tail
        )
        return outcome.model_copy(update={"losses_without_progress": 0})
    streak = job.losses_without_progress + 1
    if streak < LOSSES_WITHOUT_PROGRESS_BEFORE_RETRY:
        outcome = _lost(f"{reason}; no checkpoint in this segment: resuming", log_tail)
    else:
        outcome = application_failure(
            job, f"{reason}; {streak} segments in a row without a checkpoint", log_tail or []
        )
    return outcome.model_copy(update={"losses_without_progress": streak})


def classify_allocation_end(
    job: Job,
    end_state: str | None,
    exit_code: int | str | None = None,
    log_tail: list[str] | None = None,
) -> JobOutcome:
    """The allocation ended with the job still bound and no terminal event of its epoch.

    SLURM's infrastructure ends requeue from the checkpoint without spending a retry; a plain
    FAILED or COMPLETED (the worker died without saying why, e.g. SIGKILL) goes by
    `worker_lost`: free after progress, a retry only when it recurs without progress; an
    unknown end (vanished from squeue and sacct) is "lost" and requeues.
    """
    state = (str(end_state) if end_state is not None else "UNKNOWN").upper()
    operator = _operator_outcome(job, f"allocation ended {state}", None)
    if operator is not None:
        return operator
    if state in RESUMABLE_END_STATES:
        return _lost(f"allocation ended {state}; resuming from the last checkpoint", log_tail)
    if state == "FAILED":
        code = f" (exit code {exit_code})" if exit_code is not None else ""
        return worker_lost(job, f"allocation FAILED{code} without a worker event", log_tail)
    if state == "COMPLETED":
        # The worker exited 0 without handing off or completing: it died quietly.
        return worker_lost(job, "allocation completed without a worker event", log_tail)
    return _lost(f"allocation lost ({state}); resuming from the last checkpoint", log_tail)


def classify_hung(job: Job, stale_for_s: float) -> JobOutcome:
    """Heartbeat seq stuck while SLURM says running: requeue under a new epoch (fenced)."""
    operator = _operator_outcome(job, "worker hung", None)
    return operator or worker_lost(
        job, f"worker heartbeat stale for {stale_for_s:.0f}s; stopped and requeued"
    )


def classify_stop_timeout(job: Job) -> JobOutcome:
    """The worker did not confirm a stop within the grace period; the allocation is cancelled."""
    operator = _operator_outcome(job, "stop not confirmed", None)
    return operator or _lost(
        "worker did not confirm the stop; allocation cancelled and job requeued"
    )
