"""Figures derived from a RelaySnapshot for the report (pure): handoff gaps, queue waits per
cluster/partition, failures by classified cause."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from itertools import pairwise

from pydantic import BaseModel

from relaymd.models import SegmentOutcome
from relaymd.views.snapshot import RelaySnapshot, SegmentView

# Outcomes that ended a segment against the plan: the report's failures section.
TROUBLE = (
    SegmentOutcome.FAILED,
    SegmentOutcome.LOST,
    SegmentOutcome.STOPPED,
    SegmentOutcome.CANCELLED,
)


class HandoffGap(BaseModel):
    """From one segment's end to its successor's first step: simulation time lost."""

    job_id: str
    epoch: int  # of the later segment
    from_cluster: str
    to_cluster: str
    ended_at: datetime
    lost_s: float


class FailureCause(BaseModel):
    outcome: SegmentOutcome
    reason: str
    segments: int
    jobs: list[str]


def handoff_gaps(snapshot: RelaySnapshot) -> list[HandoffGap]:
    """Every gap between two consecutive segments of a job where the first handed off."""
    by_job: dict[str, list[SegmentView]] = defaultdict(list)
    for seg in snapshot.segments:
        by_job[seg.job_id].append(seg)
    gaps = []
    for job_id, segments in by_job.items():
        ordered = sorted(segments, key=lambda s: s.epoch)
        for before, after in pairwise(ordered):
            if before.outcome is SegmentOutcome.HANDOFF and before.ended_at is not None:
                gaps.append(
                    HandoffGap(
                        job_id=job_id,
                        epoch=after.epoch,
                        from_cluster=before.cluster,
                        to_cluster=after.cluster,
                        ended_at=before.ended_at,
                        lost_s=max(0.0, (after.started_at - before.ended_at).total_seconds()),
                    )
                )
    return gaps


def queue_waits(snapshot: RelaySnapshot) -> dict[str, list[float]]:
    """Measured queue waits (started allocations) in seconds by "cluster/partition"."""
    waits: dict[str, list[float]] = defaultdict(list)
    for alloc in snapshot.allocations:
        if alloc.started_at is not None:
            waits[f"{alloc.cluster}/{alloc.partition}"].append(alloc.queue_wait_s)
    return dict(sorted(waits.items()))


def failure_causes(snapshot: RelaySnapshot) -> list[FailureCause]:
    """Segments that ended in trouble, grouped by outcome and classified reason, most first."""
    counts: Counter[tuple[SegmentOutcome, str]] = Counter()
    jobs: dict[tuple[SegmentOutcome, str], set[str]] = defaultdict(set)
    for seg in snapshot.segments:
        if seg.outcome in TROUBLE:
            key = (seg.outcome, seg.reason or "no reason recorded")
            counts[key] += 1
            jobs[key].add(seg.job_id)
    return [
        FailureCause(outcome=outcome, reason=reason, segments=n, jobs=sorted(jobs[outcome, reason]))
        for (outcome, reason), n in counts.most_common()
    ]
