"""Small builders for daemon unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relaymd.mailbox.models import EventKind, WorkerEvent
from relaymd.models import (
    Allocation,
    AllocationState,
    CheckpointRef,
    ClusterProfile,
    GpuInfo,
    Job,
    JobSpec,
    ObjectRef,
    OpenMMSettings,
    Partition,
)
from relaymd.scheduler.base import EndState, SchedulerJob, SchedulerPhase

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SHA = "0" * 64


def make_job(
    job_id: str = "j1",
    *,
    image: str = "openmm",
    gpus: int = 0,
    min_vram_gib: float = 0.0,
    allowed: list[str] | None = None,
    preferred: list[str] | None = None,
    priority: int = 0,
    max_retries: int = 2,
    retries: int = 0,
    created_s: float = 0.0,
    **fields: object,
) -> Job:
    spec = JobSpec(
        title=f"title {job_id}",
        engine=OpenMMSettings(total_steps=100),
        image=image,
        resources={"gpus": gpus, "min_vram_gib": min_vram_gib},
        placement={"allowed_clusters": allowed or [], "preferred_clusters": preferred or []},
        priority=priority,
        max_retries=max_retries,
    )
    return Job(
        id=job_id,
        spec=spec,
        bundle=ObjectRef(key=f"jobs/{job_id}/input/bundle.tar.gz", sha256=SHA, size=1),
        retries=retries,
        created_at=T0 + timedelta(seconds=created_s),
        **fields,
    )


def ev(kind: EventKind, epoch: int = 2, **fields: object) -> WorkerEvent:
    """A worker event from allocation a1 about job j1."""
    return WorkerEvent(kind=kind, allocation_id="a1", job_id="j1", epoch=epoch, **fields)


def sched_job(
    alloc_id: str, phase: str = "running", end_state: str | None = None, sid: str = "100"
) -> SchedulerJob:
    """What the scheduler reports for `alloc_id` (on node n1)."""
    return SchedulerJob(
        allocation_id=alloc_id,
        scheduler_id=sid,
        phase=SchedulerPhase(phase),
        raw_state=phase,
        end_state=EndState(end_state) if end_state else None,
        node="n1",
    )


def ckpt_ref(epoch: int, seq: int, step: int, job_id: str = "j1") -> CheckpointRef:
    """A checkpoint pointer of `job_id` under its usual key prefix."""
    return CheckpointRef(
        epoch=epoch,
        seq=seq,
        step=step,
        prefix=f"jobs/{job_id}/checkpoints/{epoch}-{seq}/",
        manifest_sha256=SHA,
    )


def make_alloc(
    alloc_id: str = "a1",
    *,
    cluster: str = "c1",
    partition: str = "p1",
    image: str = "openmm",
    state: AllocationState = AllocationState.RUNNING,
    job_id: str | None = None,
    gpus: list[GpuInfo] | None = None,
    submitted_s: float = 0.0,
    **fields: object,
) -> Allocation:
    return Allocation(
        id=alloc_id,
        cluster=cluster,
        partition=partition,
        image=image,
        state=state,
        walltime_s=600,
        job_id=job_id,
        gpus=gpus or [],
        submitted_at=T0 + timedelta(seconds=submitted_s),
        **fields,
    )


def make_profile(
    name: str = "c1",
    *,
    gpus: int = 1,
    max_pending: int = 2,
    max_running: int = 4,
    partitions: list[Partition] | None = None,
    preferred_gpus: list[str] | None = None,
    native: bool = True,
) -> ClusterProfile:
    return ClusterProfile(
        name=name,
        transport="local",
        scheduler="slurm",
        scratch="/tmp/scratch",
        partitions=partitions
        or [
            Partition(
                name="p1",
                walltime_minutes=10,
                gpus_per_allocation=gpus,
                max_pending=max_pending,
                max_running=max_running,
            )
        ],
        native_worker=["python", "-m", "worker_entry"] if native else None,
        images={} if native else {"openmm": {"sif": "/x/openmm.sif"}},
        preferred_gpus=preferred_gpus or [],
    )


def make_sched_job(
    alloc_id: str, phase: str = "running", end_state: str | None = None, sid: str = "100"
) -> SchedulerJob:
    """What the scheduler's query reports for one allocation (relaymd.scheduler)."""
    end = EndState.parse(end_state) if end_state else None
    return SchedulerJob(
        allocation_id=alloc_id,
        scheduler_id=sid,
        phase=SchedulerPhase(phase),
        raw_state=end_state or phase.upper(),
        end_state=end,
        node="n1",
    )
