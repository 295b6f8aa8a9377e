"""GPU-seconds per job: every second of a running allocation is charged exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relaymd.models import Allocation, AllocationState, GpuInfo, Segment, SegmentOutcome
from relaymd.models.usage import GpuUsage
from relaymd.state.usage import (
    UNATTRIBUTED,
    allocation_usage,
    allocation_usage_sums,
    total_usage,
    usage_by_job,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _alloc(alloc_id: str, start: float | None, end: float | None, gpus: int = 1) -> Allocation:
    return Allocation(
        id=alloc_id,
        cluster="c1",
        partition="p1",
        image="openmm",
        state=AllocationState.ENDED if end is not None else AllocationState.RUNNING,
        walltime_s=3600,
        gpus=[GpuInfo(name="A100", memory_total_mib=40_000)] * gpus,
        submitted_at=T0,
        started_at=_t(start) if start is not None else None,
        ended_at=_t(end) if end is not None else None,
    )


def _seg(job: str, epoch: int, alloc: str, start: float, end: float | None) -> Segment:
    return Segment(
        job_id=job,
        epoch=epoch,
        allocation_id=alloc,
        cluster="c1",
        started_at=_t(start),
        ended_at=_t(end) if end is not None else None,
        outcome=SegmentOutcome.HANDOFF if end is not None else SegmentOutcome.RUNNING,
    )


def test_allocated_time_splits_into_simulating_startup_waits_and_tails() -> None:
    allocations = [
        _alloc("A", 0, 1000, gpus=2),  # L epoch 1, then a 100 s tail
        _alloc("B", 100, 1300),  # S, then waits warm for L, then L epoch 2
        _alloc("C", 50, 80),  # never used
        _alloc("D", None, None),  # still queued at the scheduler: costs nothing
    ]
    segments = [
        _seg("L", 1, "A", 30, 900),
        _seg("S", 1, "B", 130, 200),
        _seg("L", 2, "B", 905, 1290),
    ]
    usage = usage_by_job(allocations, segments, now=_t(5000))
    long, short = usage["L"], usage["S"]
    assert long.simulating_gpu_s == 2 * 870 + 385
    assert long.startup_gpu_s == 2 * 30
    assert long.between_gpu_s == 705  # B waiting warm for L's handoff
    assert long.tail_gpu_s == 2 * 100 + 10
    assert long.idle_gpu_s == long.startup_gpu_s + long.between_gpu_s + long.tail_gpu_s
    assert long.allocated_gpu_s == long.simulating_gpu_s + long.idle_gpu_s == 3100
    assert (short.allocated_gpu_s, short.simulating_gpu_s, short.startup_gpu_s) == (100, 70, 30)
    assert usage[UNATTRIBUTED].tail_gpu_s == 30
    # Every running second of every allocation, times its GPUs, is charged once.
    total = total_usage(allocations, segments, now=_t(5000))
    assert total.allocated_gpu_s == 2 * 1000 + 1200 + 30


def test_a_live_allocation_counts_until_now() -> None:
    allocations = [_alloc("A", 0, None)]
    segments = [_seg("L", 1, "A", 10, None)]
    usage = usage_by_job(allocations, segments, now=_t(100))["L"]
    assert (usage.allocated_gpu_s, usage.simulating_gpu_s, usage.startup_gpu_s) == (100, 90, 10)
    assert usage.tail_gpu_s == 0


def test_plain_sums_equal_the_models_exactly() -> None:
    """The report's fast path: the same seconds, bit for bit, per job and field."""
    allocations = [
        _alloc("A", 0.3, 1000.7, gpus=3),
        _alloc("B", 100.1, None),
        _alloc("C", 50, 80),
        _alloc("D", None, None),
    ]
    segments = [
        _seg("L", 2, "B", 905.37, None),
        _seg("L", 1, "A", 30.11, 500.9),
        _seg("S", 1, "A", 510.2, 700.03),
        _seg("L", 3, "A", 701.7, 990.1),
        _seg("S", 2, "B", 130.9, 200.4),
    ]
    for alloc in allocations:
        models = allocation_usage(alloc, segments, now=_t(5000.13))
        sums = allocation_usage_sums(alloc, segments, now=_t(5000.13))
        assert list(sums) == list(models)
        for job_id, usage in models.items():
            assert dict(zip(GpuUsage.model_fields, sums[job_id], strict=True)) == dict(usage)


def test_a_held_gpu_slot_counts_for_the_multi_gpu_job_of_its_lead() -> None:
    """ADR 0026: slot g1 is held for L's lead g0 during L's segment, then runs S alone."""
    allocations = [_alloc("g0", 0, 1000), _alloc("g1", 0, 1000)]
    lead = _seg("L", 1, "g0", 100, 900).model_copy(update={"held_allocation_ids": ["g1"]})
    segments = [lead, _seg("S", 1, "g1", 920, 990)]
    usage = usage_by_job(allocations, segments, now=_t(5000))
    long, short = usage["L"], usage["S"]
    assert long.simulating_gpu_s == 800 + 800  # both GPUs ran L's engine
    assert long.startup_gpu_s == 100 + 100
    assert long.tail_gpu_s == 100  # g0 after L; g1's next stretch belongs to S
    assert (short.between_gpu_s, short.simulating_gpu_s, short.tail_gpu_s) == (20, 70, 10)
    assert UNATTRIBUTED not in usage
    assert total_usage(allocations, segments, now=_t(5000)).allocated_gpu_s == 2000
    for alloc in allocations:
        models = allocation_usage(alloc, segments, now=_t(5000))
        sums = allocation_usage_sums(alloc, segments, now=_t(5000))
        for job_id, got in models.items():
            assert dict(zip(GpuUsage.model_fields, sums[job_id], strict=True)) == dict(got)
