"""Which jobs may run where: image, GPU count, measured VRAM, placement."""

from __future__ import annotations

from datetime import datetime

from relaymd.mailbox.models import Heartbeat
from relaymd.models import Allocation, ClusterProfile, GpuInfo, Job, Partition


def cluster_allows(job: Job, cluster: str) -> bool:
    allowed = job.spec.placement.allowed_clusters
    return not allowed or cluster in allowed


def image_available(profile: ClusterProfile, image: str) -> bool:
    return profile.native_worker is not None or image in profile.images


def fits_partition(job: Job, profile: ClusterProfile, partition: Partition) -> bool:
    """Could an allocation of this partition ever run the job?"""
    return (
        cluster_allows(job, profile.name)
        and image_available(profile, job.spec.image)
        and job.spec.resources.gpus <= partition.gpus_per_allocation
    )


def vram_ok(job: Job, gpus: list[GpuInfo]) -> bool:
    """Measured VRAM (from the worker's nvidia-smi report) against the job's minimum.

    Nothing measured yet (no GPUs reported) only passes for jobs that ask for no minimum.
    """
    need = job.spec.resources.min_vram_gib
    if need <= 0:
        return True
    return bool(gpus) and min(g.memory_gib for g in gpus) >= need


def gpus_measured(alloc: Allocation) -> bool:
    """Has the worker reported its GPUs yet?

    Every heartbeat carries the worker's nvidia-smi report, so once one was seen the list is
    the measurement (empty: no usable GPU); before that (pending, just started) it is unknown.
    """
    return alloc.last_seq is not None or bool(alloc.gpus)


def time_for_a_segment(beat: Heartbeat, now: datetime, min_segment_s: float) -> bool:
    """Does the worker have `min_segment_s` left before it must start its handoff?

    Workers without a deadline (direct scheduler, no walltime) always do.
    """
    if beat.deadline is None:
        return True
    left = (beat.deadline - now).total_seconds() - (beat.handoff_margin_s or 0.0)
    return left >= min_segment_s


def slot_need(job: Job) -> int:
    """GPU slots the job occupies (ADR 0026): its `resources.gpus`, at least one."""
    return max(1, job.spec.resources.gpus)


def is_slot(alloc: Allocation) -> bool:
    """A row of a multi-GPU group (one slot per GPU), not a one-GPU allocation."""
    return alloc.group_id is not None and alloc.slot_count > 1


def fits_allocation(
    job: Job,
    alloc: Allocation,
    profile: ClusterProfile,
    *,
    unmeasured_fits: bool = False,
    group_member: bool = False,
) -> bool:
    """May this job be bound to this allocation (image, partition, placement, VRAM)?

    `unmeasured_fits` is for counting supply: an allocation whose GPUs are not measured yet
    may still fit a VRAM minimum. Binding always needs a measured fit. One GPU slot alone
    never fits a job that needs several: `group_member` asks whether the slot may be one of
    the k slots of its group that such a job takes (relaymd.daemon.slot_packing).
    """
    if alloc.image != job.spec.image or alloc.cluster != profile.name:
        return False
    if is_slot(alloc) and slot_need(job) > 1 and not group_member:
        return False
    try:
        partition = profile.partition(alloc.partition)
    except KeyError:
        return False
    if not fits_partition(job, profile, partition):
        return False
    if unmeasured_fits and not gpus_measured(alloc):
        return True
    return vram_ok(job, alloc.gpus)


def job_order_key(job: Job) -> tuple[int, float, str]:
    """Higher priority first, then oldest first."""
    return (-job.spec.priority, job.created_at.timestamp(), job.id)
