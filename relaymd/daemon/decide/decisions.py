"""What one cluster's cycle decides from (`DecideInput`) and what it decided (`CycleDecisions`).

The caller persists a `CycleDecisions` in one transaction before it writes to the cluster.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from relaymd.daemon.evidence import ClaimKey
from relaymd.daemon.provision import ClusterMode
from relaymd.mailbox.carrier import ClusterSnapshot
from relaymd.models import (
    Allocation,
    ClusterProfile,
    DaemonSettings,
    Job,
    Segment,
    SegmentOutcome,
)
from relaymd.models.backoff import PartitionBackoff


class AuditRecord(BaseModel):
    kind: str
    message: str
    job_id: str | None = None
    allocation_id: str | None = None


class EpochRecord(BaseModel):
    """A record about one epoch of a job (its segment)."""

    job_id: str
    epoch: int

    @classmethod
    def of(cls, job: Job, **fields: Any) -> Self:
        """The record for `job`'s current epoch."""
        return cls(job_id=job.id, epoch=job.epoch, **fields)


class SegmentClose(EpochRecord):
    outcome: SegmentOutcome
    end_step: int | None
    reason: str | None = None


class SegmentTimes(EpochRecord):
    """A worker event's time for the segment's history (clamped by the store on write)."""

    noticed_at: datetime  # the cycle that read the event: the latest the event can be
    worker_started_at: datetime | None = None
    worker_ended_at: datetime | None = None


class DecideInput(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    now: datetime
    profile: ClusterProfile
    profiles: dict[str, ClusterProfile]
    settings: DaemonSettings
    mode: ClusterMode  # may it submit, bind, keep its pending spares
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
    # Of those, the rows whose only change is a moving heartbeat's news (ADR 0027): the
    # commit may hold them in memory instead of writing them.
    news_allocations: set[str] = Field(default_factory=set)
    news_jobs: set[str] = Field(default_factory=set)
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
