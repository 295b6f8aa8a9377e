"""GPU-seconds per job and in total, from the allocation and segment rows (pure).

Each running allocation's time is cut at its segments: a segment's own time is simulating
time of its job; the time before the allocation's first segment is start-up and the time
between two segments is a wait, both charged to the job of the segment that follows; the time
after the last segment is the tail of that segment's job. See `relaymd.models.usage.GpuUsage`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from relaymd.ids import slot_allocation_id
from relaymd.models import Allocation, Segment
from relaymd.models.usage import GpuUsage

if TYPE_CHECKING:
    from relaymd.state import StateStore

UNATTRIBUTED = ""  # allocations that never ran a segment


def _segments_on(alloc_id: str, segments: Iterable[Segment]) -> list[Segment]:
    """The segments that ran on this allocation's GPUs: its own, and those of a lead slot
    that held it for a multi-GPU job (ADR 0026)."""
    return sorted(
        (s for s in segments if alloc_id in (s.allocation_id, *s.held_allocation_ids)),
        key=lambda s: s.started_at,
    )


def _gpus(alloc: Allocation) -> int:
    return max(1, len(alloc.gpus))


def _span(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def allocation_usage(
    alloc: Allocation, segments: Iterable[Segment], now: datetime
) -> dict[str, GpuUsage]:
    """This allocation's GPU-seconds by job id (UNATTRIBUTED for an unused allocation)."""
    if alloc.started_at is None:
        return {}  # never ran: queue time is not allocated GPU time
    start, end, gpus = alloc.started_at, alloc.ended_at or now, _gpus(alloc)
    usage: dict[str, GpuUsage] = defaultdict(GpuUsage)
    mine = _segments_on(alloc.id, segments)
    cursor = start
    last_job = UNATTRIBUTED
    for index, seg in enumerate(mine):
        seg_start = min(max(seg.started_at, start), end)
        seg_end = min(max(seg.ended_at or end, seg_start), end)
        wait = _span(cursor, seg_start) * gpus
        busy = _span(seg_start, seg_end) * gpus
        field = "startup_gpu_s" if index == 0 else "between_gpu_s"
        usage[seg.job_id] = usage[seg.job_id].plus(
            GpuUsage(
                allocated_gpu_s=wait + busy,
                simulating_gpu_s=busy,
                idle_gpu_s=wait,
                **{field: wait},
            )
        )
        cursor = max(cursor, seg_end)
        last_job = seg.job_id
    tail = _span(cursor, end) * gpus
    if tail > 0:
        usage[last_job] = usage[last_job].plus(
            GpuUsage(allocated_gpu_s=tail, idle_gpu_s=tail, tail_gpu_s=tail)
        )
    return dict(usage)


def segments_by_allocation(segments: Iterable[Segment]) -> dict[str, list[Segment]]:
    by_alloc: dict[str, list[Segment]] = defaultdict(list)
    for seg in segments:
        for alloc_id in (seg.allocation_id, *seg.held_allocation_ids):
            by_alloc[alloc_id].append(seg)
    return by_alloc


def usage_by_job(
    allocations: Iterable[Allocation], segments: list[Segment], now: datetime
) -> dict[str, GpuUsage]:
    by_alloc = segments_by_allocation(segments)
    total: dict[str, GpuUsage] = defaultdict(GpuUsage)
    for alloc in allocations:
        for job_id, usage in allocation_usage(alloc, by_alloc.get(alloc.id, []), now).items():
            total[job_id] = total[job_id].plus(usage)
    return dict(total)


def total_usage(
    allocations: Iterable[Allocation], segments: list[Segment], now: datetime
) -> GpuUsage:
    result = GpuUsage()
    for usage in usage_by_job(allocations, segments, now).values():
        result = result.plus(usage)
    return result


def job_usage(store: StateStore, job_id: str, now: datetime) -> GpuUsage:
    """One job's figures from a StateStore: its segments' allocations and every segment on
    them (a wait before this job's segment is charged to it, a tail after it too), with the GPU
    slots held for it (ADR 0026)."""
    alloc_ids = sorted(
        {i for s in store.list_segments(job_id) for i in (s.allocation_id, *s.held_allocation_ids)}
    )
    if not alloc_ids:
        return GpuUsage()
    allocations = [a for a in (store.get_allocation(i) for i in alloc_ids) if a is not None]
    # A held slot's time is also cut by the segments of the group's other leads it served.
    siblings = {
        slot_allocation_id(a.group_id, i)
        for a in allocations
        if a.group_id
        for i in range(a.slot_count)
    }
    segments = store.list_segments_on(sorted(siblings.union(alloc_ids)))
    return usage_by_job(allocations, segments, now).get(job_id, GpuUsage())


def allocation_usage_sums(
    alloc: Allocation, segments: Iterable[Segment], now: datetime
) -> dict[str, list[float]]:
    """`allocation_usage` as plain floats in `GpuUsage.model_fields` order, for summing
    thousands of allocations (a GpuUsage per segment costs seconds at 20 000); the same
    additions in the same order, so the sums are identical."""
    if alloc.started_at is None:
        return {}
    start, end, gpus = alloc.started_at, alloc.ended_at or now, _gpus(alloc)
    sums: dict[str, list[float]] = {}
    cursor, last_job = start, UNATTRIBUTED
    mine = _segments_on(alloc.id, segments)
    for index, seg in enumerate(mine):
        seg_start = min(max(seg.started_at, start), end)
        seg_end = min(max(seg.ended_at or end, seg_start), end)
        wait, busy = _span(cursor, seg_start) * gpus, _span(seg_start, seg_end) * gpus
        first = 0.0 if index else wait
        _add(sums, seg.job_id, (wait + busy, busy, wait, first, wait - first, 0.0))
        cursor, last_job = max(cursor, seg_end), seg.job_id
    tail = _span(cursor, end) * gpus
    if tail > 0:
        _add(sums, last_job, (tail, 0.0, tail, 0.0, 0.0, tail))
    return sums


def _add(sums: dict[str, list[float]], job_id: str, parts: tuple[float, ...]) -> None:
    total = sums.setdefault(job_id, [0.0] * len(parts))
    for i, value in enumerate(parts):
        total[i] += value
