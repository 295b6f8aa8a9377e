"""Jobs: the logical simulation that relays across allocations."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from relaymd.models.base import UserModel, WireModel, utcnow
from relaymd.models.engines import EngineSettings
from relaymd.models.storage import CheckpointRef, ObjectRef


class Resources(UserModel):
    gpus: int = Field(1, ge=0)
    min_vram_gib: float = Field(0.0, ge=0)


class Placement(UserModel):
    """Empty `allowed_clusters` means any cluster."""

    allowed_clusters: list[str] = Field(default_factory=list)
    preferred_clusters: list[str] = Field(default_factory=list)


class JobSpec(UserModel):
    """What a user submits (relaymd.yaml in the job directory, or flags)."""

    title: str = Field(min_length=1, max_length=200)
    engine: EngineSettings
    image: str = "openmm"
    resources: Resources = Field(default_factory=Resources)
    placement: Placement = Field(default_factory=Placement)
    checkpoint_interval_s: float = Field(600.0, gt=0)
    max_retries: int = Field(3, ge=0)
    priority: int = 0


class JobState(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RUNNING = "running"
    HELD = "held"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class OperatorRequest(StrEnum):
    """Written by the CLI on an active job; carried out by the daemon's next cycle."""

    CANCEL = "cancel"
    REQUEUE = "requeue"


class Job(WireModel):
    """A job row as the state store holds it."""

    id: str
    spec: JobSpec
    state: JobState = JobState.QUEUED
    epoch: int = 0
    bundle: ObjectRef
    checkpoint: CheckpointRef | None = None  # the resume pointer: newest verified checkpoint
    # Older verified checkpoints kept by retention, newest first: the worker falls back to
    # them when the pointer's files fail verification.
    fallbacks: list[CheckpointRef] = Field(default_factory=list)
    allocation_id: str | None = None
    retries: int = 0
    # Segments in a row whose worker died unexplained before this epoch's first checkpoint:
    # such deaths spend a retry only when they recur (relaymd/daemon/classify.py).
    losses_without_progress: int = 0
    step: int = 0
    total_steps: int | None = None
    ns_per_day: float | None = None
    operator_request: OperatorRequest | None = None
    # Highest epoch ever pre-written to a reserved successor (ADR 0009): a later binding
    # elsewhere takes a higher epoch, so a pre-written assignment never shares its epoch.
    prewritten_epoch: int = 0
    failure_reason: str | None = None
    log_tail: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class SegmentOutcome(StrEnum):
    RUNNING = "running"
    HANDOFF = "handoff"
    COMPLETED = "completed"
    FAILED = "failed"
    LOST = "lost"
    STOPPED = "stopped"
    CANCELLED = "cancelled"


class Segment(WireModel):
    """One stretch of a job on one allocation: the relay history."""

    job_id: str
    epoch: int
    allocation_id: str
    cluster: str
    start_step: int = 0
    end_step: int | None = None
    started_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = None
    outcome: SegmentOutcome = SegmentOutcome.RUNNING
    reason: str | None = None
    # When the worker says the segment ran: the `at` of its `started` (first MD step) and
    # terminal events, clamped into [started_at, the daemon cycle that read them] so that a
    # skewed worker clock stays on the daemon's. None without such an event; `started_at` and
    # `ended_at` stay the daemon's own (assignment, the cycle that saw the end).
    worker_started_at: datetime | None = None
    worker_ended_at: datetime | None = None
