"""One cycle's working copies of the rows, and the record of what changed.

Every phase of the decide step reads and writes the rows through a `Cycle`: `put_job` and
`put_alloc` keep the working copy current and record the change in `out`, and `put_job`
holds every job state change to the job state machine (relaymd.models.job).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from relaymd.daemon.classify import JobOutcome, Verdict, advanced_checkpoint
from relaymd.daemon.decide.decisions import (
    AuditRecord,
    CycleDecisions,
    DecideInput,
    SegmentClose,
    SegmentTimes,
)
from relaymd.models import Allocation, Job, JobState, Segment
from relaymd.models.job import Actor, JobEpoch, check_transition


class Cycle:
    """Working copies of the rows plus the record of what changed."""

    def __init__(self, inp: DecideInput) -> None:
        self.inp = inp
        self.now = inp.now
        self.out = CycleDecisions()
        self.allocs: dict[str, Allocation] = {a.id: a for a in inp.allocations}
        self.jobs: dict[str, Job] = dict(inp.jobs)
        # Epochs requeued by a handoff from the pointer's checkpoint, this cycle.
        self.handed_off: set[JobEpoch] = set()

    def put_alloc(self, alloc: Allocation) -> None:
        current = self.allocs.get(alloc.id)
        if current is alloc:  # the working copy put back: nothing to compare
            return
        if current != alloc:
            self.allocs[alloc.id] = alloc
            self.out.allocations[alloc.id] = alloc
            self.out.news_allocations.discard(alloc.id)

    def put_news_alloc(self, alloc: Allocation) -> None:
        """An allocation the caller changed only in its heartbeat news (`last_seq`,
        `seq_changed_at`): recorded without comparison, and as news unless the row changed
        otherwise this cycle (ADR 0027)."""
        if alloc.id not in self.out.allocations:
            self.out.news_allocations.add(alloc.id)
        self.allocs[alloc.id] = alloc
        self.out.allocations[alloc.id] = alloc

    def put_job(self, job: Job) -> None:
        before = self.jobs.get(job.id)
        if before is job:  # the working copy put back: no change, no transition
            return
        if before is not None:
            check_transition(job.id, before.state, job.state, Actor.DAEMON)
        if before != job:
            job = job.model_copy(update={"updated_at": self.now})
            self.jobs[job.id] = job
            self.out.jobs[job.id] = job
            self.out.news_jobs.discard(job.id)

    def put_stamped_job(self, job: Job) -> None:
        """A job the caller already changed and stamped with `updated_at = now`: recorded
        without `put_job`'s comparison and second copy (one copy per change)."""
        before = self.jobs.get(job.id)
        if before is not None:
            check_transition(job.id, before.state, job.state, Actor.DAEMON)
        self.jobs[job.id] = job
        self.out.jobs[job.id] = job
        self.out.news_jobs.discard(job.id)

    def put_news_job(self, job: Job) -> None:
        """A job the caller changed only in its heartbeat news (speed, total steps) and
        stamped, as `put_stamped_job`; recorded as news unless the row changed otherwise
        this cycle (ADR 0027)."""
        if job.id not in self.out.jobs:
            self.out.news_jobs.add(job.id)
        self.jobs[job.id] = job
        self.out.jobs[job.id] = job

    def audit(
        self, kind: str, message: str, *, job_id: str | None = None, alloc_id: str | None = None
    ) -> None:
        self.out.audits.append(
            AuditRecord(kind=kind, message=message, job_id=job_id, allocation_id=alloc_id)
        )

    def stop_worker(
        self, alloc: Allocation, kind: str, message: str, *, job_id: str | None
    ) -> Allocation:
        """Tell `alloc`'s worker to stop (the write step writes its control file), saying why."""
        alloc = alloc.model_copy(update={"stop_requested_at": self.now})
        self.put_alloc(alloc)
        self.audit(kind, message, job_id=job_id, alloc_id=alloc.id)
        return alloc

    def bound_job(self, alloc: Allocation) -> Job | None:
        """The active job bound to this allocation (both sides must agree)."""
        if alloc.job_id is None:
            return None
        job = self.jobs.get(alloc.job_id)
        if job is None or job.allocation_id != alloc.id or job.state.is_final:
            return None
        return job

    def queued(self) -> list[Job]:
        """Jobs waiting for an allocation (and no operator request pending on them)."""
        return [
            j
            for j in self.jobs.values()
            if j.state is JobState.QUEUED and j.operator_request is None
        ]

    def start_epoch(self, job: Job, alloc: Allocation, epoch: int, held: Sequence[str] = ()) -> Job:
        """Bind `job` to `alloc` under `epoch`, resuming from its pointer, and open the
        segment's history row (naming the GPU slots `held` for it); the caller binds the
        allocation's side."""
        job = job.model_copy(
            update={
                "state": JobState.ASSIGNED,
                "epoch": epoch,
                "allocation_id": alloc.id,
                "step": job.checkpoint.step if job.checkpoint else 0,
            }
        )
        self.put_job(job)
        self.out.new_segments.append(
            Segment(
                job_id=job.id,
                epoch=job.epoch,
                allocation_id=alloc.id,
                cluster=alloc.cluster,
                start_step=job.step,
                started_at=self.now,
                held_allocation_ids=list(held),
            )
        )
        return job

    def segment_times(
        self, job: Job, *, started: datetime | None = None, ended: datetime | None = None
    ) -> None:
        """When the worker says the job's current segment started or ended."""
        self.out.segment_times.append(
            SegmentTimes.of(
                job, noticed_at=self.now, worker_started_at=started, worker_ended_at=ended
            )
        )

    def apply_outcome(self, job: Job, alloc: Allocation | None, outcome: JobOutcome) -> None:
        """End the job's segment as classified: close it, move the job, unbind it."""
        end_step = outcome.end_step if outcome.end_step is not None else job.step
        if job.checkpoint is not None and outcome.verdict is Verdict.REQUEUE:
            end_step = max(end_step, job.checkpoint.step)
        self.out.closed_segments.append(
            SegmentClose.of(job, outcome=outcome.segment, end_step=end_step, reason=outcome.reason)
        )
        self.put_job(job.model_copy(update=_outcome_update(job, outcome)))
        if alloc is not None and alloc.job_id == job.id:
            self.put_alloc(alloc.model_copy(update={"job_id": None}))
        self.audit(
            f"job_{outcome.verdict.value}",
            outcome.reason,
            job_id=job.id,
            alloc_id=alloc.id if alloc else None,
        )


def _outcome_update(job: Job, outcome: JobOutcome) -> dict[str, Any]:
    """The job row's changes for a classified segment end."""
    update: dict[str, Any] = {"allocation_id": None, "operator_request": None}
    streak = outcome.losses_without_progress
    if streak is None and advanced_checkpoint(job):
        streak = 0
    if streak is not None:
        update["losses_without_progress"] = streak
    if outcome.verdict is Verdict.REQUEUE:
        update["state"] = JobState.QUEUED
        # Resume from the pointer: progress beyond it is not kept.
        update["step"] = job.checkpoint.step if job.checkpoint else 0
        if outcome.counts_retry:
            update["retries"] = job.retries + 1
            update["log_tail"] = outcome.log_tail
            update["failure_reason"] = outcome.reason
    elif outcome.verdict is Verdict.COMPLETE:
        update["state"] = JobState.COMPLETED
        update["step"] = outcome.end_step or job.total_steps or job.step
        update["failure_reason"] = None
    elif outcome.verdict is Verdict.FAIL:
        update["state"] = JobState.FAILED
        update["failure_reason"] = outcome.reason
        update["log_tail"] = outcome.log_tail
    else:
        update["state"] = JobState.CANCELLED
    return update
