"""Jobs: the logical simulation that relays across allocations."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import Flag, StrEnum, auto
from typing import NamedTuple

from pydantic import ConfigDict, Field

from relaymd.models.base import UserModel, WireModel, utcnow
from relaymd.models.engines import EngineSettings
from relaymd.models.storage import CheckpointRef, ObjectRef


class Resources(UserModel):
    model_config = ConfigDict(frozen=True)  # part of a frozen JobSpec (ADR 0029)

    gpus: int = Field(1, ge=0)
    min_vram_gib: float = Field(0.0, ge=0)


class Placement(UserModel):
    """Empty `allowed_clusters` means any cluster."""

    model_config = ConfigDict(frozen=True)  # part of a frozen JobSpec (ADR 0029)

    allowed_clusters: list[str] = Field(default_factory=list)
    preferred_clusters: list[str] = Field(default_factory=list)


class JobSpec(UserModel):
    """What a user submits (relaymd.yaml in the job directory, or flags). Frozen: a stored
    spec never changes in place, and the state store keeps its text (ADR 0029)."""

    model_config = ConfigDict(frozen=True)  # merged with UserModel's

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

    @property
    def is_active(self) -> bool:
        """Still the daemon's business: waiting, held, or on an allocation."""
        return not self.is_final

    @property
    def on_allocation(self) -> bool:
        """Bound to an allocation: only the daemon moves it on (an operator files a request)."""
        return self in (JobState.ASSIGNED, JobState.RUNNING)

    @classmethod
    def active(cls) -> list[JobState]:
        return [state for state in cls if state.is_active]


class Actor(Flag):
    """Who may make a transition: the daemon's cycle, or the operator (CLI, Python API)."""

    DAEMON = auto()
    OPERATOR = auto()


class JobTransitionError(ValueError):
    """A job state change the state machine does not allow (a bug where the daemon does it)."""


# The job state machine (docs/job-lifecycle.md): old -> new -> who may make the move. A job on
# an allocation is moved only by the daemon, which sees the worker; the operator moves jobs
# that hold none and asks the daemon (`operator_request`) about the others.
_SEGMENT_ENDS = {
    JobState.QUEUED: Actor.DAEMON,  # handoff, lost, hung, operator requeue: resume later
    JobState.COMPLETED: Actor.DAEMON,
    JobState.FAILED: Actor.DAEMON,
    JobState.CANCELLED: Actor.DAEMON,  # an operator's cancel request carried out
}
JOB_TRANSITIONS: Mapping[JobState, Mapping[JobState, Actor]] = {
    JobState.QUEUED: {
        JobState.ASSIGNED: Actor.DAEMON,  # bound to an idle allocation (a new epoch)
        JobState.HELD: Actor.OPERATOR,
        # The daemon carries out a cancel request stored while the job was on an allocation.
        JobState.CANCELLED: Actor.OPERATOR | Actor.DAEMON,
    },
    JobState.HELD: {
        JobState.QUEUED: Actor.OPERATOR,
        JobState.CANCELLED: Actor.OPERATOR | Actor.DAEMON,
    },
    JobState.ASSIGNED: {JobState.RUNNING: Actor.DAEMON, **_SEGMENT_ENDS},
    JobState.RUNNING: _SEGMENT_ENDS,
    JobState.FAILED: {JobState.QUEUED: Actor.OPERATOR},  # requeued, retries reset
    JobState.CANCELLED: {JobState.QUEUED: Actor.OPERATOR},
    JobState.COMPLETED: {},
}


def can_transition(old: JobState, new: JobState, by: Actor) -> bool:
    """Whether `by` may move a job from `old` to `new` (staying put is no transition)."""
    allowed = JOB_TRANSITIONS[old].get(new)
    return allowed is not None and by in allowed


def check_transition(job_id: str, old: JobState, new: JobState, by: Actor) -> None:
    if old is not new and not can_transition(old, new, by):
        who = "the daemon" if by is Actor.DAEMON else "an operator"
        raise JobTransitionError(f"job {job_id}: {who} cannot move it from {old} to {new}")


class JobEpoch(NamedTuple):
    """One attempt of a job: the fencing identity a worker's writes must carry."""

    job_id: str
    epoch: int


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
    # The GPU slots held for this multi-GPU segment besides its own (ADR 0026): their
    # allocations' time counts for this job as the lead's does.
    held_allocation_ids: list[str] = Field(default_factory=list)
