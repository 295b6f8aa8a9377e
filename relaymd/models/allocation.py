"""Allocations: the SLURM (or direct) jobs that carry workers."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from relaymd.models.base import WireModel, utcnow
from relaymd.models.job import JobEpoch


class GpuInfo(WireModel):
    """One GPU of an allocation, as its worker's heartbeat reports it."""

    name: str
    memory_total_mib: int = Field(ge=0)

    @property
    def memory_gib(self) -> float:
        return self.memory_total_mib / 1024


class AllocationState(StrEnum):
    SUBMITTING = "submitting"  # row written, sbatch not yet confirmed (invariant 4)
    PENDING = "pending"
    RUNNING = "running"
    ENDED = "ended"

    @property
    def is_final(self) -> bool:
        return self is AllocationState.ENDED


class Allocation(WireModel):
    id: str
    cluster: str
    partition: str
    image: str
    state: AllocationState = AllocationState.SUBMITTING
    scheduler_id: str | None = None
    walltime_s: int = Field(gt=0)
    job_id: str | None = None
    gpus: list[GpuInfo] = Field(default_factory=list)
    last_seq: int | None = None
    # Daemon clock when `last_seq` last changed: liveness never trusts the worker's clock.
    seq_changed_at: datetime | None = None
    events_offset: int = 0
    # Inside an events.jsonl line longer than the window: skip to its end before parsing.
    events_skipping: bool = False
    stop_requested_at: datetime | None = None
    end_reason: str | None = None
    submitted_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # A successor reservation (ADR 0009): this idle allocation will continue `reserved_job_id`
    # under `reserved_epoch` once that job's epoch `reserved_epoch - 1` hands off.
    reserved_job_id: str | None = None
    reserved_epoch: int | None = None
    reserved_until: datetime | None = None  # the worker drops the gated assignment then
    # GPU slots (ADR 0026): a row per GPU of a multi-GPU SLURM job. `group_id` is the id the
    # scheduler knows (None: a one-GPU allocation, its own group), `slot` this GPU's index.
    group_id: str | None = None
    slot: int = Field(0, ge=0)
    slot_count: int = Field(1, ge=1)
    # This slot's GPU serves the multi-GPU job bound to the lead slot `held_by`.
    held_by: str | None = None
    # A `kill` control was sent to this slot instead of an scancel of its whole group.
    kill_requested_at: datetime | None = None
    # Why the daemon keeps (or releases) this allocation while it is idle: `workers list`.
    note: str | None = None

    @property
    def scheduler_key(self) -> str:
        """The id the scheduler's job name carries: the group's for a slot."""
        return self.group_id or self.id

    @property
    def reservation(self) -> JobEpoch | None:
        """The (job, epoch) pre-written to this allocation as a successor, if any."""
        if self.reserved_job_id is None or self.reserved_epoch is None:
            return None
        return JobEpoch(self.reserved_job_id, self.reserved_epoch)
