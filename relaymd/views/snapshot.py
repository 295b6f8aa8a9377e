"""One read of the state file turned into what every view shows: jobs with progress, rate,
next handoff and ETA; segments and allocations for the timeline; clusters; the daemon."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel

from relaymd.models import (
    Allocation,
    AllocationState,
    ClusterStatus,
    DaemonStatus,
    GpuUsage,
    Job,
    Segment,
    SegmentOutcome,
)
from relaymd.state import StateStore
from relaymd.state.usage import allocation_usage_sums, segments_by_allocation
from relaymd.views.eta import Eta, estimate_eta
from relaymd.views.gc_pause import gc_paused
from relaymd.views.times import segment_times

RATE_SEGMENTS = 5  # the rate is measured over the job's most recent segments


class SegmentView(BaseModel):
    job_id: str
    epoch: int
    cluster: str
    partition: str
    allocation_id: str
    scheduler_id: str | None
    start_step: int
    end_step: int | None
    started_at: datetime
    ended_at: datetime | None  # None while it runs
    outcome: SegmentOutcome
    reason: str | None


class AllocationView(BaseModel):
    id: str
    cluster: str
    partition: str
    state: AllocationState
    scheduler_id: str | None
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    gpus: int
    queue_wait_s: float  # submitted to started; so far for one still pending


class JobView(BaseModel):
    id: str
    title: str
    state: str
    step: int
    total_steps: int | None
    ns_per_day: float | None
    cluster: str | None  # of its running segment
    allocation_id: str | None
    partition: str | None
    steps_per_s: float | None
    handoff_in_s: float | None  # until its allocation's walltime ends: the latest handoff
    eta: Eta | None
    failure_reason: str | None

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.step / self.total_steps) if self.total_steps else None


class ClusterView(BaseModel):
    name: str
    enabled: bool
    reachability: str
    pending: int
    running: int
    longest_wait_s: float | None  # the oldest pending allocation's queue wait so far
    last_poll_at: datetime | None


class RelaySnapshot(BaseModel):
    generated_at: datetime
    jobs: list[JobView]
    segments: list[SegmentView]
    allocations: list[AllocationView]
    clusters: list[ClusterView]
    daemon: DaemonStatus | None
    # GPU-seconds per cluster of the allocations the shown jobs ran on (every allocation
    # when all jobs are shown): allocated vs simulating is the relay's efficiency.
    usage_by_cluster: dict[str, GpuUsage]


def take_snapshot(
    store: StateStore, now: datetime, job_ids: Sequence[str] | None = None
) -> RelaySnapshot:
    """Everything the views show, for these jobs (every job when None), as of `now`."""
    with gc_paused():
        return _snapshot(store, now, job_ids)


def _snapshot(store: StateStore, now: datetime, job_ids: Sequence[str] | None) -> RelaySnapshot:
    wanted = set(job_ids) if job_ids is not None else None
    jobs = [job for job in store.list_jobs() if wanted is None or job.id in wanted]
    allocations = {a.id: a for a in store.list_allocations()}
    segments = [s for s in store.list_segments_on() if wanted is None or s.job_id in wanted]
    used = {i for s in segments for i in (s.allocation_id, *s.held_allocation_ids)}
    alloc_views = [_allocation_view(a, now) for a in allocations.values()]
    waits = _waits_by_partition(alloc_views)
    by_job: dict[str, list[Segment]] = defaultdict(list)
    for seg in segments:
        by_job[seg.job_id].append(seg)
    return RelaySnapshot(
        generated_at=now,
        jobs=[_job_view(j, by_job.get(j.id, []), allocations, waits, now) for j in jobs],
        segments=[_segment_view(s, allocations.get(s.allocation_id)) for s in segments],
        allocations=[a for a in alloc_views if wanted is None or a.id in used],
        clusters=_cluster_views(store.list_cluster_status(), alloc_views),
        daemon=store.get_daemon_status(),
        usage_by_cluster=_usage_by_cluster(
            [a for a in allocations.values() if wanted is None or a.id in used], segments, now
        ),
    )


def _usage_by_cluster(
    allocations: list[Allocation], segments: list[Segment], now: datetime
) -> dict[str, GpuUsage]:
    on = segments_by_allocation(segments)
    # Plain sums: a GpuUsage.plus per allocation cost seconds at 20 000 allocations.
    sums: dict[str, dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(GpuUsage.model_fields, 0.0)
    )
    for alloc in allocations:
        for part in allocation_usage_sums(alloc, on.get(alloc.id, []), now).values():
            total = sums[alloc.cluster]
            for name, value in zip(GpuUsage.model_fields, part, strict=True):
                total[name] += value
    return {cluster: GpuUsage(**sums[cluster]) for cluster in sorted(sums)}


def _allocation_view(alloc: Allocation, now: datetime) -> AllocationView:
    waited_until = alloc.started_at or alloc.ended_at or now
    return AllocationView(
        id=alloc.id,
        cluster=alloc.cluster,
        partition=alloc.partition,
        state=alloc.state,
        scheduler_id=alloc.scheduler_id,
        submitted_at=alloc.submitted_at,
        started_at=alloc.started_at,
        ended_at=alloc.ended_at,
        gpus=max(1, len(alloc.gpus)),
        queue_wait_s=max(0.0, (waited_until - alloc.submitted_at).total_seconds()),
    )


def _waits_by_partition(allocations: list[AllocationView]) -> dict[tuple[str, str], list[float]]:
    """Measured queue waits (allocations that started) per (cluster, partition), oldest first."""
    waits: dict[tuple[str, str], list[float]] = defaultdict(list)
    for alloc in sorted(allocations, key=lambda a: a.submitted_at):
        if alloc.started_at is not None:
            waits[(alloc.cluster, alloc.partition)].append(alloc.queue_wait_s)
    return waits


def _segment_view(seg: Segment, alloc: Allocation | None) -> SegmentView:
    start, end, _ = segment_times(seg)
    return SegmentView(
        job_id=seg.job_id,
        epoch=seg.epoch,
        cluster=seg.cluster,
        partition=alloc.partition if alloc else "?",
        allocation_id=seg.allocation_id,
        scheduler_id=alloc.scheduler_id if alloc else None,
        start_step=seg.start_step,
        end_step=seg.end_step,
        started_at=start,
        ended_at=end if seg.outcome is not SegmentOutcome.RUNNING else None,
        outcome=seg.outcome,
        reason=seg.reason,
    )


def _job_view(
    job: Job,
    segments: list[Segment],
    allocations: dict[str, Allocation],
    waits: dict[tuple[str, str], list[float]],
    now: datetime,
) -> JobView:
    running = next((s for s in reversed(segments) if s.outcome is SegmentOutcome.RUNNING), None)
    alloc = allocations.get(running.allocation_id) if running else None
    last = allocations.get(segments[-1].allocation_id) if segments else None
    rate = measured_rate(job, segments, now)
    handoff_in = _walltime_left(alloc, now)
    eta = None
    if job.total_steps and not job.state.is_final and last is not None:
        eta = estimate_eta(
            job.total_steps - job.step,
            rate,
            _segment_length(segments, last),
            handoff_in if running else None,
            waits.get((last.cluster, last.partition), []),
        )
    return JobView(
        id=job.id,
        title=job.spec.title,
        state=str(job.state),
        step=job.step,
        total_steps=job.total_steps,
        ns_per_day=job.ns_per_day,
        cluster=running.cluster if running else None,
        allocation_id=running.allocation_id if running else None,
        partition=alloc.partition if alloc else None,
        steps_per_s=rate,
        handoff_in_s=handoff_in if running else None,
        eta=eta,
        failure_reason=job.failure_reason,
    )


def measured_rate(job: Job, segments: list[Segment], now: datetime) -> float | None:
    """Steps per second over the job's most recent segments (the running one counts up to the
    job's verified step); None before any step was measured."""
    steps = 0.0
    seconds = 0.0
    for seg in segments[-RATE_SEGMENTS:]:
        start, end, _ = segment_times(seg)
        if seg.outcome is SegmentOutcome.RUNNING:
            done, end = job.step - seg.start_step, now
        elif seg.end_step is not None and end is not None:
            done = seg.end_step - seg.start_step
        else:
            continue
        if done > 0 and end > start:
            steps += done
            seconds += (end - start).total_seconds()
    return steps / seconds if seconds > 0 else None


def _segment_length(segments: list[Segment], last: Allocation) -> float:
    """How long one allocation simulates: the median handed-off segment, else the walltime."""
    spans = []
    for seg in segments:
        start, end, _ = segment_times(seg)
        if seg.outcome is SegmentOutcome.HANDOFF and end is not None and end > start:
            spans.append((end - start).total_seconds())
    return float(statistics.median(spans)) if spans else float(last.walltime_s)


def _walltime_left(alloc: Allocation | None, now: datetime) -> float | None:
    if alloc is None or alloc.started_at is None:
        return None
    return max(0.0, alloc.walltime_s - (now - alloc.started_at).total_seconds())


def _cluster_views(
    statuses: list[ClusterStatus], allocations: list[AllocationView]
) -> list[ClusterView]:
    names = sorted({s.name for s in statuses} | {a.cluster for a in allocations})
    seen = {s.name: s for s in statuses}
    views = []
    for name in names:
        live = [a for a in allocations if a.cluster == name and not a.state.is_final]
        pending = [a for a in live if a.started_at is None]
        status = seen.get(name)
        views.append(
            ClusterView(
                name=name,
                enabled=status.enabled if status else True,
                reachability=str(status.reachability) if status else "unknown",
                pending=len(pending),
                running=len(live) - len(pending),
                longest_wait_s=max((a.queue_wait_s for a in pending), default=None),
                last_poll_at=status.last_poll_at if status else None,
            )
        )
    return views
