"""Relay histories written through the state store's own API.

`write_relay` writes one job's segments, each on its own allocation that waited in a queue
first; `build_history` uses it for a small realistic history (five jobs on two clusters, every
segment outcome, a pending allocation, a daemon row) that the views' tests read, and
bench/report_scale.py for a large one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from relaymd.models import (
    Allocation,
    AllocationState,
    ClusterReachability,
    ClusterStatus,
    DaemonStatus,
    GpuInfo,
    Job,
    JobSpec,
    JobState,
    ObjectRef,
    OpenMMSettings,
    Segment,
    SegmentOutcome,
    utcnow,
)
from relaymd.state import StateStore

TOTAL_STEPS = 1_000_000
STEPS_PER_SEGMENT = 100_000
SEGMENT_H = 4.0
PARTITION = {"alpha": "gpu", "beta": "a100"}
# job id -> final state, and its segments as (cluster, outcome, reason); the last is newest.
PLAN: dict[str, tuple[JobState, list[tuple[str, SegmentOutcome, str | None]]]] = {
    "jdone": (
        JobState.COMPLETED,
        [
            ("alpha", SegmentOutcome.HANDOFF, "walltime handoff"),
            ("beta", SegmentOutcome.HANDOFF, "walltime handoff"),
            ("alpha", SegmentOutcome.HANDOFF, "walltime handoff"),
            ("alpha", SegmentOutcome.COMPLETED, None),
        ],
    ),
    "jrun": (
        JobState.RUNNING,
        [
            ("alpha", SegmentOutcome.HANDOFF, "walltime handoff"),
            ("beta", SegmentOutcome.LOST, "heartbeat stale: node failure"),
            ("alpha", SegmentOutcome.RUNNING, None),
        ],
    ),
    "jfail": (
        JobState.FAILED,
        [
            ("beta", SegmentOutcome.HANDOFF, "walltime handoff"),
            ("beta", SegmentOutcome.FAILED, "engine error: NaN in coordinates"),
            ("beta", SegmentOutcome.FAILED, "engine error: NaN in coordinates"),
        ],
    ),
    "jstop": (
        JobState.QUEUED,
        [
            ("alpha", SegmentOutcome.HANDOFF, "walltime handoff"),
            ("alpha", SegmentOutcome.STOPPED, "allocation ended: node drained"),
        ],
    ),
    "jcancel": (
        JobState.CANCELLED,
        [
            ("beta", SegmentOutcome.HANDOFF, "walltime handoff"),
            ("beta", SegmentOutcome.CANCELLED, "cancelled by operator"),
        ],
    ),
}


@dataclass(frozen=True)
class History:
    path: Path
    segments: int  # segments written, each on its own allocation that waited in a queue
    pending_allocations: int
    running_job: str


def build_history(path: Path) -> History:
    """Write the plan into a new state file at `path`; segments end before now, the running
    one started an hour ago on a 6 h allocation."""
    now = utcnow()
    count = 0
    with StateStore.open(path) as store:
        for index, (job_id, (state, plan)) in enumerate(PLAN.items()):
            start = now - timedelta(hours=SEGMENT_H * len(plan) + 2 + index)
            segments = [
                PlannedSegment(
                    cluster=cluster,
                    partition=PARTITION[cluster],
                    outcome=outcome,
                    reason=reason,
                    queue_wait=timedelta(minutes=5 + 7 * epoch),  # waits differ per handoff
                )
                for epoch, (cluster, outcome, reason) in enumerate(plan, start=1)
            ]
            step = write_relay(store, _job(job_id, state), segments, start, now)
            job = store.get_job(job_id)
            assert job is not None
            total = step if state is JobState.COMPLETED else TOTAL_STEPS
            store.update_job(job.model_copy(update={"step": step, "total_steps": total}))
            count += len(plan)
        store.insert_allocation(_allocation("pend-beta", "beta", now - timedelta(minutes=25)))
        for name in PARTITION:
            store.upsert_cluster_status(
                ClusterStatus(
                    name=name,
                    reachability=ClusterReachability.REACHABLE,
                    last_poll_at=now - timedelta(seconds=20),
                )
            )
        store.set_daemon_status(
            DaemonStatus(pid=4242, hostname="ws", last_cycle_at=now, cycles=812, version="0.1.0")
        )
    return History(path=path, segments=count, pending_allocations=1, running_job="jrun")


class PlannedSegment(BaseModel):
    """One segment of a relay: where it ran, how it ended, how long it waited and ran."""

    cluster: str
    partition: str
    outcome: SegmentOutcome
    reason: str | None = None
    queue_wait: timedelta  # allocation submitted -> started
    hours: float = SEGMENT_H
    steps: int = STEPS_PER_SEGMENT


def write_relay(
    store: StateStore, job: Job, segments: Sequence[PlannedSegment], start: datetime, now: datetime
) -> int:
    """Insert `job` and its segments, the first allocation submitted at `start`, each next one
    a minute after the last ended; a RUNNING segment started an hour ago and ends the relay.
    Returns the job's step at the end."""
    store.insert_job(job)
    step = 0
    for epoch, planned in enumerate(segments, start=1):
        wait = planned.queue_wait
        alloc_id = f"{job.id}-a{epoch}"
        started = start + wait
        running = planned.outcome is SegmentOutcome.RUNNING
        if running:  # on its allocation for the last hour
            start, started = now - timedelta(hours=1) - wait, now - timedelta(hours=1)
        alloc = _allocation(alloc_id, planned.cluster, start, planned.partition).model_copy(
            update={"state": AllocationState.RUNNING, "started_at": started, "job_id": job.id}
        )
        store.insert_allocation(alloc)
        seg_start = started + timedelta(minutes=2)
        store.insert_segment(
            Segment(
                job_id=job.id,
                epoch=epoch,
                allocation_id=alloc_id,
                cluster=planned.cluster,
                start_step=step,
                started_at=seg_start,
                worker_started_at=seg_start,
            )
        )
        if running:
            store.update_job(job.model_copy(update={"allocation_id": alloc_id}))
            return step + planned.steps // 4
        ended = min(seg_start + timedelta(hours=planned.hours), now - timedelta(minutes=1))
        step += planned.steps if planned.outcome is not SegmentOutcome.FAILED else 0
        store.close_segment(job.id, epoch, planned.outcome, step, planned.reason)
        store.record_segment_times(job.id, epoch, now, worker_ended_at=ended)
        store.update_allocation(
            alloc.model_copy(
                update={"state": AllocationState.ENDED, "ended_at": ended + timedelta(minutes=1)}
            )
        )
        start = ended + timedelta(minutes=1)
    return step


def _job(job_id: str, state: JobState) -> Job:
    return Job(
        id=job_id,
        spec=JobSpec(title=f"ligand {job_id}", engine=OpenMMSettings(total_steps=TOTAL_STEPS)),
        state=state,
        bundle=ObjectRef(key=f"jobs/{job_id}/input/bundle.tar.gz", sha256="a" * 64, size=10),
        ns_per_day=120.0 if state is JobState.RUNNING else None,
        failure_reason="engine error: NaN in coordinates" if state is JobState.FAILED else None,
    )


def _allocation(
    alloc_id: str, cluster: str, submitted: datetime, partition: str | None = None
) -> Allocation:
    return Allocation(
        id=alloc_id,
        cluster=cluster,
        partition=partition or PARTITION[cluster],
        image="openmm",
        state=AllocationState.PENDING,
        scheduler_id=str(abs(hash(alloc_id)) % 100000),
        walltime_s=6 * 3600,
        gpus=[GpuInfo(name="NVIDIA A100", memory_total_mib=40960)],
        submitted_at=submitted,
    )
