"""One cluster's decisions for one cycle, from the snapshot and the store's rows. Pure.

Order inside a cycle matters: the scheduler's view first (adopt, start, end), then the
worker's events (read after the query, so they explain any end), then liveness, operator
requests, late binding and finally provisioning on what is left. Everything lands in a
`CycleDecisions` that the caller persists in one transaction before it writes to the cluster.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from relaymd.daemon import warm
from relaymd.daemon.assign import assign, held_for_preferred
from relaymd.daemon.classify import (
    JobOutcome,
    Verdict,
    advanced_checkpoint,
    classify_allocation_end,
    classify_event,
    classify_hung,
    classify_stop_timeout,
)
from relaymd.daemon.eligibility import time_for_a_segment
from relaymd.daemon.evidence import ClaimKey, checkpoint_refusal, completion_refusal
from relaymd.daemon.liveness import (
    heartbeat_counts,
    is_stale,
    liveness_reference,
    observe_heartbeat,
    unheard_note,
)
from relaymd.daemon.provision import is_spare, plan_provisioning
from relaymd.daemon.retention import advance_pointer
from relaymd.daemon.start_backoff import (
    AllocationEnd,
    blocked_partitions,
    update_backoff,
    worker_reported,
)
from relaymd.mailbox.carrier import AllocationFiles, ClusterSnapshot
from relaymd.mailbox.models import EVENT_LINE_MAX_BYTES, EventKind, WorkerEvent, WorkerState
from relaymd.models import (
    Allocation,
    AllocationState,
    CheckpointRef,
    ClusterProfile,
    DaemonSettings,
    Job,
    JobState,
    OperatorRequest,
    Segment,
    SegmentOutcome,
)
from relaymd.models.backoff import PartitionBackoff

ACTIVE_JOB_STATES = (JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING, JobState.HELD)
_LEAVING_EVENTS = {
    EventKind.HANDOFF: "worker handed off",
    EventKind.STOPPED: "worker stopped",
    EventKind.IDLE_EXIT: "worker idle exit",
}


class AuditRecord(BaseModel):
    kind: str
    message: str
    job_id: str | None = None
    allocation_id: str | None = None


class SegmentClose(BaseModel):
    job_id: str
    epoch: int
    outcome: SegmentOutcome
    end_step: int | None
    reason: str | None = None


class SegmentTimes(BaseModel):
    """A worker event's time for the segment's history (clamped by the store on write)."""

    job_id: str
    epoch: int
    noticed_at: datetime  # the cycle that read the event: the latest the event can be
    worker_started_at: datetime | None = None
    worker_ended_at: datetime | None = None


class DecideInput(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    now: datetime
    profile: ClusterProfile
    profiles: dict[str, ClusterProfile]
    settings: DaemonSettings
    enabled: bool  # may submit
    disabled: bool = False  # switched off by the operator: its pending spares are cancelled
    usable_clusters: set[str]
    snapshot: ClusterSnapshot
    allocations: list[Allocation]  # this cluster's rows that were read this cycle
    all_live: list[Allocation]  # live allocations of every cluster (provisioning)
    jobs: dict[str, Job]  # every active job, plus any job a read allocation is bound to
    # Reported checkpoints whose manifest verified in storage (relaymd.daemon.evidence), and
    # why the others did not.
    verified: set[ClaimKey] = Field(default_factory=set)
    rejected_claims: dict[ClaimKey, str] = Field(default_factory=dict)
    submit_grace_s: float = 120.0
    want_log: dict[str, str] = Field(default_factory=dict)  # ended allocation -> job
    # Allocations missing from both squeue and sacct, since when (sacct can lag squeue).
    vanished_since: dict[str, datetime] = Field(default_factory=dict)
    vanished_grace_s: float = 30.0
    # Staleness is not counted from before the daemon started (no heartbeats were read then).
    daemon_started_at: datetime | None = None
    # This cluster's start-failure records by partition (relaymd.daemon.start_backoff).
    backoff: dict[str, PartitionBackoff] = Field(default_factory=dict)


class CycleDecisions(BaseModel):
    allocations: dict[str, Allocation] = Field(default_factory=dict)  # changed rows
    new_allocations: list[Allocation] = Field(default_factory=list)
    jobs: dict[str, Job] = Field(default_factory=dict)  # changed rows
    bound: list[str] = Field(default_factory=list)  # job ids bound this cycle (new epoch)
    # Job ids bound to their reserved successor at the epoch already pre-written (ADR 0009).
    activated: list[str] = Field(default_factory=list)
    new_segments: list[Segment] = Field(default_factory=list)
    closed_segments: list[SegmentClose] = Field(default_factory=list)
    segment_times: list[SegmentTimes] = Field(default_factory=list)
    audits: list[AuditRecord] = Field(default_factory=list)
    cancel: dict[str, str] = Field(default_factory=dict)  # allocation id -> scheduler id
    want_log: dict[str, str] = Field(default_factory=dict)  # allocation -> job (log tail)
    checkpointed: list[str] = Field(default_factory=list)  # jobs whose pointer advanced
    vanished_since: dict[str, datetime] = Field(default_factory=dict)  # still unexplained
    backoff: dict[str, PartitionBackoff] = Field(default_factory=dict)  # after this cycle

    @property
    def changed(self) -> bool:
        # Audits mark every state change; progress-only updates (ns/day) do not count, so a
        # quietly running job lets the poll interval back off.
        return bool(self.audits or self.new_allocations or self.cancel)


class _Cycle:
    """Working copies of the rows plus the record of what changed."""

    def __init__(self, inp: DecideInput) -> None:
        self.inp = inp
        self.now = inp.now
        self.out = CycleDecisions()
        self.allocs: dict[str, Allocation] = {a.id: a for a in inp.allocations}
        self.jobs: dict[str, Job] = dict(inp.jobs)
        # (job, epoch) requeued by a handoff from the pointer's checkpoint, this cycle.
        self.handed_off: set[tuple[str, int]] = set()

    # -- bookkeeping -------------------------------------------------------------------
    def put_alloc(self, alloc: Allocation) -> None:
        if self.allocs.get(alloc.id) != alloc:
            self.allocs[alloc.id] = alloc
            self.out.allocations[alloc.id] = alloc

    def put_job(self, job: Job) -> None:
        if self.jobs.get(job.id) != job:
            job = job.model_copy(update={"updated_at": self.now})
            self.jobs[job.id] = job
            self.out.jobs[job.id] = job

    def audit(
        self, kind: str, message: str, *, job_id: str | None = None, alloc_id: str | None = None
    ) -> None:
        self.out.audits.append(
            AuditRecord(kind=kind, message=message, job_id=job_id, allocation_id=alloc_id)
        )

    def bound_job(self, alloc: Allocation) -> Job | None:
        """The active job bound to this allocation (both sides must agree)."""
        if alloc.job_id is None:
            return None
        job = self.jobs.get(alloc.job_id)
        if job is None or job.allocation_id != alloc.id or job.state.is_final:
            return None
        return job

    # -- outcomes ----------------------------------------------------------------------
    def apply_outcome(self, job: Job, alloc: Allocation | None, outcome: JobOutcome) -> None:
        end_step = outcome.end_step if outcome.end_step is not None else job.step
        if job.checkpoint is not None and outcome.verdict is Verdict.REQUEUE:
            end_step = max(end_step, job.checkpoint.step)
        self.out.closed_segments.append(
            SegmentClose(
                job_id=job.id,
                epoch=job.epoch,
                outcome=outcome.segment,
                end_step=end_step,
                reason=outcome.reason,
            )
        )
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
        self.put_job(job.model_copy(update=update))
        if alloc is not None and alloc.job_id == job.id:
            self.put_alloc(alloc.model_copy(update={"job_id": None}))
        self.audit(
            f"job_{outcome.verdict.value}",
            outcome.reason,
            job_id=job.id,
            alloc_id=alloc.id if alloc else None,
        )

    # -- phases ------------------------------------------------------------------------
    def scheduler_view(self, alloc: Allocation) -> Allocation:
        """Adopt, start or end the allocation from the scheduler's report."""
        sj = self.inp.snapshot.scheduler_jobs.get(alloc.id)
        phase = str(sj.phase) if sj is not None else None
        update: dict[str, Any] = {}
        if sj is not None and sj.scheduler_id and alloc.scheduler_id != sj.scheduler_id:
            update["scheduler_id"] = sj.scheduler_id
            if alloc.state is AllocationState.SUBMITTING:
                self.audit(
                    "allocation_adopted",
                    f"found as scheduler job {sj.scheduler_id} after an unconfirmed submit",
                    alloc_id=alloc.id,
                )
        if phase == "pending" and alloc.state is AllocationState.SUBMITTING:
            update["state"] = AllocationState.PENDING
        elif phase == "running" and alloc.state in (
            AllocationState.SUBMITTING,
            AllocationState.PENDING,
        ):
            update["state"] = AllocationState.RUNNING
            update["started_at"] = self.now
            node = getattr(sj, "node", None) or "?"
            self.audit("allocation_running", f"running on {node}", alloc_id=alloc.id)
        if update:
            alloc = alloc.model_copy(update=update)
            self.put_alloc(alloc)
        return alloc

    def ended_state(self, alloc: Allocation) -> tuple[bool, str | None, int | None]:
        """(ended, end state, exit code) from the scheduler; vanished counts as ended."""
        sj = self.inp.snapshot.scheduler_jobs.get(alloc.id)
        if sj is not None:
            if str(sj.phase) != "ended":
                return False, None, None
            end = sj.end_state
            return True, (str(end) if end is not None else None), sj.exit_code
        if alloc.state is AllocationState.SUBMITTING:
            # Never seen by the scheduler: give an interrupted submit time to show up, then
            # drop the row (a later cycle provisions afresh; an orphan found later is cancelled).
            age = (self.now - alloc.submitted_at).total_seconds()
            return age >= self.inp.submit_grace_s, "NOT_SUBMITTED", None
        if alloc.state is AllocationState.ENDED:
            return False, None, None
        # Absent from squeue is not finished (invariant 5): wait for sacct or the worker's
        # events to explain it, for a while, before calling it lost.
        since = self.inp.vanished_since.get(alloc.id, self.now)
        if (self.now - since).total_seconds() < self.inp.vanished_grace_s and (
            self.bound_job(alloc) is not None
        ):
            self.out.vanished_since[alloc.id] = since
            return False, None, None
        return True, None, None

    def events(self, alloc: Allocation, files: AllocationFiles) -> Allocation:
        for event in files.events:
            alloc = self.event(alloc, event)
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
            self.put_alloc(alloc)
        if files.oversized_lines or files.unusable_lines:
            self.audit(
                "events_skipped",
                f"events.jsonl: skipped {files.oversized_lines} line(s) over"
                f" {EVENT_LINE_MAX_BYTES} bytes and {files.unusable_lines} unreadable line(s)",
                job_id=alloc.job_id,
                alloc_id=alloc.id,
            )
        return alloc

    def event(self, alloc: Allocation, event: WorkerEvent) -> Allocation:
        if event.kind in _LEAVING_EVENTS and alloc.end_reason is None:
            alloc = alloc.model_copy(update={"end_reason": _LEAVING_EVENTS[event.kind]})
            self.put_alloc(alloc)
        if event.kind is EventKind.IDLE_EXIT or event.job_id is None:
            return alloc
        job = self.bound_job(alloc)
        if job is None or job.id != event.job_id or job.epoch != event.epoch:
            # A late write of an old epoch (or of a job moved elsewhere): fenced, never merged.
            self.audit(
                "stale_event_ignored",
                f"{event.kind.value} of epoch {event.epoch} ignored"
                f" (current epoch {job.epoch if job else 'none'})",
                job_id=event.job_id,
                alloc_id=alloc.id,
            )
            return alloc
        if event.kind is EventKind.STARTED:
            self.out.segment_times.append(
                SegmentTimes(
                    job_id=job.id,
                    epoch=job.epoch,
                    noticed_at=self.now,
                    worker_started_at=event.at,
                )
            )
            if job.state is JobState.ASSIGNED:
                self.put_job(job.model_copy(update={"state": JobState.RUNNING}))
            self.audit(
                "job_started",
                f"epoch {job.epoch} started (resumed from {event.resumed_from or 'start'})",
                job_id=job.id,
                alloc_id=alloc.id,
            )
        elif event.kind is EventKind.CHECKPOINT and event.checkpoint is not None:
            self.claim(job, alloc, event.checkpoint)
        elif event.kind is EventKind.CHECKPOINT_FALLBACK:
            self.audit(
                "checkpoint_fallback",
                event.reason or "worker resumed from a fallback",
                job_id=job.id,
                alloc_id=alloc.id,
            )
        elif event.kind is EventKind.COMPLETED and not self.completion_proven(job, alloc, event):
            return alloc  # not completion: the job keeps running (or requeues when it ends)
        else:
            job = self.jobs[job.id]  # the completed event may have moved the pointer
            outcome = classify_event(job, event)
            if (
                outcome is not None
                and event.kind is EventKind.HANDOFF
                and outcome.verdict is Verdict.REQUEUE
                and event.checkpoint is not None
                and event.checkpoint == job.checkpoint
            ):
                self.handed_off.add((job.id, job.epoch))
            if outcome is not None:
                if event.kind is EventKind.COMPLETED and job.checkpoint is not None:
                    outcome.end_step = job.checkpoint.step  # the verified step, not the claim
                self.out.segment_times.append(
                    SegmentTimes(
                        job_id=job.id,
                        epoch=job.epoch,
                        noticed_at=self.now,
                        worker_ended_at=event.at,
                    )
                )
                self.apply_outcome(job, alloc, outcome)
                alloc = self.allocs[alloc.id]
        return alloc

    def claim(self, job: Job, alloc: Allocation, ref: CheckpointRef) -> bool:
        """Move the pointer to a reported checkpoint if it proves itself; audit if not."""
        v = self.inp
        reason = checkpoint_refusal(job, ref, v.verified, v.rejected_claims)
        if reason is not None:
            self.audit(
                "checkpoint_rejected",
                f"checkpoint {ref.epoch}-{ref.seq} at {ref.prefix} rejected: {reason};"
                " pointer not moved",
                job_id=job.id,
                alloc_id=alloc.id,
            )
            return False
        self.put_job(advance_pointer(job, ref, self.inp.settings.retention_keep))
        self.out.checkpointed.append(job.id)
        return True

    def completion_proven(self, job: Job, alloc: Allocation, event: WorkerEvent) -> bool:
        """A `completed` event counts only with a verified final checkpoint of this epoch."""
        ref, pointer = event.checkpoint, job.checkpoint
        unseen = ref is not None and (
            pointer is None or (ref.epoch, ref.seq) > (pointer.epoch, pointer.seq)
        )
        # A final checkpoint not reported by its own event yet: the same rules apply.
        if unseen and ref is not None and self.claim(job, alloc, ref):
            job = self.jobs[job.id]
        reason = completion_refusal(job, event)
        if reason is None:
            return True
        self.audit(
            "completion_rejected",
            f"completed event of epoch {job.epoch} at step {event.step} not believed: {reason}",
            job_id=job.id,
            alloc_id=alloc.id,
        )
        return False

    def end(
        self, alloc: Allocation, state: str | None, code: int | None, files: AllocationFiles | None
    ) -> None:
        job = self.bound_job(alloc)
        if job is not None:
            tail = files.log_tail if files and files.log_tail else []
            self.apply_outcome(job, alloc, classify_allocation_end(job, state, code, tail))
            alloc = self.allocs[alloc.id]
            if not tail:
                self.out.want_log[alloc.id] = job.id
        reason = alloc.end_reason or (state or "vanished")
        self.put_alloc(
            alloc.model_copy(
                update={
                    "state": AllocationState.ENDED,
                    "ended_at": self.now,
                    "reserved_job_id": None,
                    "reserved_epoch": None,
                    "note": None,
                    "end_reason": f"{reason} ({state})"
                    if state and state not in reason
                    else reason,
                }
            )
        )
        self.audit("allocation_ended", f"ended: {state or 'vanished'}", alloc_id=alloc.id)

    def liveness(self, alloc: Allocation, files: AllocationFiles | None) -> Allocation:
        heartbeat = files.heartbeat if files else None
        # Only a heartbeat of the allocation's current assignment proves it alive (an idle one
        # for an unbound allocation): a moving seq for another job or epoch is no news.
        reserved = (
            (alloc.reserved_job_id, alloc.reserved_epoch)
            if alloc.reserved_job_id is not None and alloc.reserved_epoch is not None
            else None
        )
        counted = heartbeat_counts(alloc.id, self.bound_job(alloc), heartbeat, reserved)
        alloc2 = observe_heartbeat(alloc, heartbeat if counted else None, self.now)
        if alloc2 != alloc:
            self.put_alloc(alloc2)
            alloc = alloc2
        job = self.bound_job(alloc)
        if (
            heartbeat is not None
            and job is not None
            and heartbeat.job_id == job.id
            and heartbeat.epoch == job.epoch
            and heartbeat.state is WorkerState.RUNNING
        ):
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
                self.put_job(job.model_copy(update=update))
        not_before = self.inp.daemon_started_at
        if (
            alloc.state is AllocationState.RUNNING
            and alloc.stop_requested_at is None
            and is_stale(alloc, self.now, self.inp.settings.stale_after_s, not_before=not_before)
        ):
            since = liveness_reference(alloc, not_before=not_before)
            oversized = bool(files and files.heartbeat_oversized)
            stale_for = (self.now - since).total_seconds() if since else 0.0
            alloc = alloc.model_copy(update={"stop_requested_at": self.now})
            self.put_alloc(alloc)
            self.audit(
                "worker_hung",
                f"heartbeat seq {alloc.last_seq} unchanged for {stale_for:.0f}s"
                f"{unheard_note(None if counted else heartbeat, oversized)}; stopping",
                alloc_id=alloc.id,
                job_id=alloc.job_id,
            )
            job = self.bound_job(alloc)
            if job is not None:
                self.apply_outcome(job, alloc, classify_hung(job, stale_for))
                alloc = self.allocs[alloc.id]
        return alloc

    def stop_grace(self, alloc: Allocation) -> None:
        if alloc.stop_requested_at is None or alloc.state is AllocationState.ENDED:
            return
        waited = (self.now - alloc.stop_requested_at).total_seconds()
        if waited < self.inp.settings.stop_grace_s:
            return
        job = self.bound_job(alloc)
        if job is not None:
            self.apply_outcome(job, alloc, classify_stop_timeout(job))
        if alloc.id not in self.out.cancel and alloc.scheduler_id:
            self.out.cancel[alloc.id] = alloc.scheduler_id
            self.audit("allocation_cancel", f"no stop after {waited:.0f}s", alloc_id=alloc.id)

    def operator_requests(self) -> None:
        for job in list(self.jobs.values()):
            if job.operator_request is None or job.state.is_final:
                continue
            if job.state in (JobState.QUEUED, JobState.HELD):
                if job.operator_request is OperatorRequest.CANCEL:
                    self.put_job(
                        job.model_copy(
                            update={"state": JobState.CANCELLED, "operator_request": None}
                        )
                    )
                    self.audit("job_cancel", "cancelled by operator while queued", job_id=job.id)
                else:
                    self.put_job(job.model_copy(update={"operator_request": None}))
                    self.audit("job_requeue", "already queued", job_id=job.id)
                continue
            alloc = self.allocs.get(job.allocation_id or "")
            if alloc is None or alloc.stop_requested_at is not None:
                continue
            self.put_alloc(alloc.model_copy(update={"stop_requested_at": self.now}))
            self.audit(
                "stop_requested",
                f"operator {job.operator_request.value}: stop sent to the worker",
                job_id=job.id,
                alloc_id=alloc.id,
            )

    def _queued(self) -> list[Job]:
        """Jobs waiting for an allocation (and no operator request pending on them)."""
        return [
            j
            for j in self.jobs.values()
            if j.state is JobState.QUEUED and j.operator_request is None
        ]

    def bind(self, heartbeats: dict[str, AllocationFiles]) -> None:
        if self.inp.disabled:
            return  # nothing new starts on a disabled cluster; its idle workers exit idle
        idle: list[Allocation] = []
        for alloc in self.allocs.values():
            files = heartbeats.get(alloc.id)
            beat = files.heartbeat if files else None
            if (
                alloc.state is AllocationState.RUNNING
                and is_spare(alloc)
                and beat is not None
                and beat.state is WorkerState.IDLE
                and heartbeat_counts(alloc.id, None, beat)
                # No restart grace here: a job is bound only to a worker seen alive.
                and not is_stale(alloc, self.now, self.inp.settings.stale_after_s)
                and time_for_a_segment(beat, self.now, self.inp.settings.min_segment_s)
            ):
                idle.append(alloc)
        queued = self._queued()
        # Idle workers on other usable clusters, as their rows show: alive, running, unbound.
        idle_elsewhere = [
            a
            for a in self.inp.all_live
            if a.cluster != self.inp.profile.name
            and a.cluster in self.inp.usable_clusters
            and a.state is AllocationState.RUNNING
            and is_spare(a)
            and a.last_seq is not None
            and not is_stale(a, self.now, self.inp.settings.stale_after_s)
        ]
        held = held_for_preferred(queued, idle_elsewhere, self.inp.profiles, self.inp.profile.name)
        queued = [j for j in queued if j.id not in held]
        for binding in assign(idle, queued, self.inp.profile):
            job = self.jobs[binding.job_id]
            alloc = self.allocs[binding.allocation_id]
            # The epoch's one source; persist writes it only while the row's epoch is still
            # the one read here (compare-and-set). A pre-written epoch is never reissued.
            epoch = max(job.epoch, job.prewritten_epoch) + 1
            job = job.model_copy(
                update={
                    "state": JobState.ASSIGNED,
                    "epoch": epoch,
                    "allocation_id": alloc.id,
                    "step": job.checkpoint.step if job.checkpoint else 0,
                }
            )
            self.put_job(job)
            self.put_alloc(alloc.model_copy(update={"job_id": job.id}))
            self.out.bound.append(job.id)
            self.out.new_segments.append(
                Segment(
                    job_id=job.id,
                    epoch=epoch,
                    allocation_id=alloc.id,
                    cluster=alloc.cluster,
                    start_step=job.step,
                    started_at=self.now,
                )
            )
            self.audit(
                "job_assigned",
                f"epoch {epoch} on {alloc.cluster}/{alloc.partition}",
                job_id=job.id,
                alloc_id=alloc.id,
            )

    def track_start_failures(self, ends: list[AllocationEnd]) -> None:
        """Update the per-partition backoff from this cycle's ends (audited when it starts)."""
        # A worker heard from for the first time proves the partition can start workers.
        seen_before = {a.id for a in self.inp.allocations if a.last_seq is not None}
        reported = {
            a.partition
            for a in self.allocs.values()
            if a.last_seq is not None and a.id not in seen_before
        }
        before = self.inp.backoff
        after = update_backoff(before, ends, reported, self.inp.settings, self.now)
        self.out.backoff = after
        for name, record in after.items():
            old = before.get(name)
            if record.until is not None and (old is None or old.until != record.until):
                self.audit(
                    "partition_backoff",
                    record.describe(self.inp.profile.name, self.now),
                    alloc_id=record.last_allocation_id,
                )

    def provision(self, new_id: Any) -> None:
        live = {a.id: a for a in self.inp.all_live}
        live.update({a.id: a for a in self.allocs.values()})
        live_list = [a for a in live.values() if a.state is not AllocationState.ENDED]
        queued = self._queued()
        plan = plan_provisioning(
            self.inp.profile,
            queued=queued,
            allocations=live_list,
            profiles=self.inp.profiles,
            usable_clusters=self.inp.usable_clusters,
            enabled=self.inp.enabled,
            queue_racing=self.inp.settings.queue_racing,
            disabled=self.inp.disabled,
            blocked=blocked_partitions(self.out.backoff, self.now),
        )
        reason = "cluster disabled" if self.inp.disabled else "not needed"
        for alloc_id in plan.cancel:
            alloc = self.allocs.get(alloc_id)
            if alloc is None or alloc.id in self.out.cancel or not alloc.scheduler_id:
                continue
            # stop_requested_at puts it on the stop-grace path: if this scancel is lost (crash,
            # transport error) it is sent again until the scheduler reports the end.
            self.put_alloc(
                alloc.model_copy(update={"end_reason": reason, "stop_requested_at": self.now})
            )
            self.out.cancel[alloc.id] = alloc.scheduler_id
            self.audit("allocation_cancel", f"pending allocation: {reason}", alloc_id=alloc.id)
        for intent in plan.submit:
            partition = self.inp.profile.partition(intent.partition)
            alloc = Allocation(
                id=new_id(),
                cluster=self.inp.profile.name,
                partition=partition.name,
                image=intent.image,
                state=AllocationState.SUBMITTING,
                walltime_s=partition.walltime_s,
                submitted_at=self.now,
            )
            self.out.new_allocations.append(alloc)
            self.audit(
                "allocation_submitting",
                f"{partition.name} for image {intent.image}",
                alloc_id=alloc.id,
            )


def decide_cycle(inp: DecideInput, new_allocation_id: Any) -> CycleDecisions:
    cycle = _Cycle(inp)
    files = inp.snapshot.files
    ends: list[AllocationEnd] = []
    # Reserved successors last: their predecessor's handoff is applied first (ADR 0009).
    for alloc in sorted(cycle.allocs.values(), key=lambda a: a.reserved_job_id is not None):
        if alloc.state is AllocationState.ENDED:
            continue
        alloc = cycle.scheduler_view(alloc)
        alloc_files = files.get(alloc.id)
        reported = worker_reported(alloc, alloc_files)  # before events() sets end_reason
        alloc, hold = warm.reservation_before_events(cycle, alloc, alloc_files)
        if alloc_files is not None and not hold:
            alloc = cycle.events(alloc, alloc_files)
        ended, state, code = cycle.ended_state(alloc)
        if ended:
            ends.append(
                AllocationEnd(
                    allocation=alloc, state=state, exit_code=code, worker_reported=reported
                )
            )
            cycle.end(alloc, state, code, alloc_files)
            continue
        alloc = cycle.liveness(alloc, alloc_files)
        cycle.stop_grace(alloc)
    # Orphans: relaymd jobs the scheduler knows but the store does not (another state file,
    # or a dropped submit that showed up late): cancel, never adopt twice.
    known = {a.id for a in inp.allocations} | {a.id for a in inp.all_live}
    for alloc_id, sj in inp.snapshot.scheduler_jobs.items():
        if alloc_id not in known and str(sj.phase) != "ended" and sj.scheduler_id:
            cycle.out.cancel[alloc_id] = sj.scheduler_id
            cycle.audit(
                "orphan_cancel", f"unknown scheduler job {sj.scheduler_id}", alloc_id=alloc_id
            )
    for alloc_id, job_id in inp.want_log.items():
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
    cycle.operator_requests()
    cycle.bind(files)
    warm.reserve_successors(cycle, files)
    warm.release_idle(cycle, files)
    cycle.track_start_failures(ends)
    cycle.provision(new_allocation_id)
    return cycle.out
