"""GPU slots in provisioning and binding (ADR 0026): what a job needs in slots, which free
slots of one group can hold it, and when a partition of N-GPU allocations is worth a request.

Pure functions of models: the callers (relaymd.daemon.provision, relaymd.daemon.decide.slots)
decide what to do with the answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime

from pydantic import BaseModel, Field

from relaymd.daemon.eligibility import fits_partition, is_slot, slot_need
from relaymd.models import Allocation, ClusterProfile, Job, Partition


def group_slots(
    job: Job, free: Iterable[Allocation], fits: Callable[[Allocation], bool]
) -> list[Allocation] | None:
    """`slot_need(job)` free slots of one group that each fit the job (`fits` asks as a
    group member), lead (lowest slot) first; the group with the fewest free slots that has
    enough (packs tightest), checked in that order so the usual answer costs one group."""
    need = slot_need(job)
    groups: dict[str, list[Allocation]] = {}
    for alloc in free:
        if is_slot(alloc):
            groups.setdefault(alloc.scheduler_key, []).append(alloc)
    candidates = sorted(
        (g for g in groups.values() if len(g) >= need),
        key=lambda g: (len(g), min(a.submitted_at for a in g), g[0].scheduler_key),
    )
    for group in candidates:
        fitting = sorted((a for a in group if fits(a)), key=lambda a: a.slot)
        if len(fitting) >= need:
            return fitting[:need]
    return None


class GroupFill(BaseModel):
    """Queued jobs packed into one new allocation of an N-GPU partition, and why it is due."""

    jobs: list[Job] = Field(default_factory=list)
    gpus: int = 0
    reason: str | None = None  # None: the fill rule is not met, do not request it


def fill_target(partition: Partition) -> int:
    """GPUs the waiting jobs must need before an N-GPU allocation is requested."""
    return max(1, math.ceil(partition.min_fill * partition.gpus_per_allocation - 1e-9))


def only_fits_here(job: Job, profile: ClusterProfile, partition: Partition) -> bool:
    """A multi-GPU job that needs more GPUs than any smaller partition of this cluster offers
    (a one-GPU job always has a one-GPU allocation somewhere to wait for: the rule holds)."""
    smaller = [
        other.gpus_per_allocation
        for other in profile.partitions
        if other.gpus_per_allocation < partition.gpus_per_allocation
    ]
    return slot_need(job) > max(smaller, default=1)


def pack_group(
    jobs: list[Job], profile: ClusterProfile, partition: Partition, now: datetime | None
) -> GroupFill:
    """First-fit the jobs (in order) into one allocation of `partition` and say whether the
    packing rule asks for it: the packed jobs need `min_fill` of its GPUs, or one of them
    waited `fill_wait_s` since it was queued, or one fits no smaller partition. One image per
    allocation: the first packed job's."""
    size = partition.gpus_per_allocation
    fill = GroupFill()
    for job in jobs:
        need = slot_need(job)
        same_image = not fill.jobs or job.spec.image == fill.jobs[0].spec.image
        if same_image and fill.gpus + need <= size and fits_partition(job, profile, partition):
            fill.jobs.append(job)
            fill.gpus += need
    if not fill.jobs:
        return fill
    if fill.gpus >= fill_target(partition):
        fill.reason = f"{fill.gpus} of {size} GPUs wanted"
    elif any(only_fits_here(j, profile, partition) for j in fill.jobs):
        fill.reason = "only this partition fits"
    elif now is not None and any(
        (now - j.updated_at).total_seconds() >= partition.fill_wait_s for j in fill.jobs
    ):
        fill.reason = f"a job waited {partition.fill_wait_s:g}s"
    return fill
