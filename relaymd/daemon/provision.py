"""How many allocations to submit or cancel on one cluster, per (partition, image).

Demand is the queued jobs; supply is the live allocations nobody is bound to (idle workers,
pending and submitting allocations). Without queue racing supply is counted on every usable
cluster, so one job causes one allocation somewhere; with racing each cluster provisions for
the unmet demand on its own and the surplus is cancelled once the jobs are bound.
Pure: the caller gives the store's view and gets a `ProvisionPlan`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from pydantic import BaseModel, Field

from relaymd.daemon.eligibility import (
    fits_allocation,
    fits_partition,
    is_slot,
    job_order_key,
    slot_need,
)
from relaymd.daemon.slot_packing import group_slots, pack_group
from relaymd.ids import group_of
from relaymd.models import Allocation, AllocationState, ClusterProfile, Job, Partition


class ClusterMode(StrEnum):
    """What one cluster's cycle may start: the operator's switch and the profile's health."""

    OPEN = "open"  # binds jobs and submits what demand needs
    WATCH = "watch"  # misconfigured profile: binds and watches what exists, submits nothing
    # Switched off by the operator: nothing new starts there and its pending spares are
    # cancelled (other clusters no longer count them); running jobs finish.
    DISABLED = "disabled"

    @classmethod
    def of(cls, *, switched_on: bool, submit_ok: bool) -> ClusterMode:
        if not switched_on:
            return cls.DISABLED
        return cls.OPEN if submit_ok else cls.WATCH


class SubmitIntent(BaseModel):
    partition: str
    image: str
    # Why an allocation of a multi-GPU partition is requested now (ADR 0026 packing rule).
    reason: str | None = None


class ProvisionPlan(BaseModel):
    submit: list[SubmitIntent] = Field(default_factory=list)
    cancel: list[str] = Field(default_factory=list)  # allocation ids (pending, unneeded)


def is_spare(alloc: Allocation) -> bool:
    """A live allocation that can still take a job: unbound, not stopping, worker not leaving.

    `end_reason` on a live allocation means its worker announced it is leaving (handoff,
    idle exit, stop) before SLURM noticed.
    """
    return (
        alloc.state is not AllocationState.ENDED
        and alloc.job_id is None
        and alloc.stop_requested_at is None
        and alloc.end_reason is None
        and alloc.reserved_job_id is None  # kept for its successor job (ADR 0009)
        and alloc.held_by is None  # its GPU serves another slot's multi-GPU job (ADR 0026)
    )


class _PartitionLoad(NamedTuple):
    waiting: set[str]  # scheduler jobs pending or being submitted
    running: set[str]


def _partition_loads(own_live: list[Allocation]) -> defaultdict[str, _PartitionLoad]:
    """Per partition, the scheduler jobs of the cluster's live rows: caps count scheduler
    jobs, so a group of GPU slots counts once (ADR 0026)."""
    loads: defaultdict[str, _PartitionLoad] = defaultdict(lambda: _PartitionLoad(set(), set()))
    for alloc in own_live:
        load = loads[alloc.partition]
        if alloc.state is AllocationState.RUNNING:
            load.running.add(alloc.scheduler_key)
        elif alloc.state in (AllocationState.PENDING, AllocationState.SUBMITTING):
            load.waiting.add(alloc.scheduler_key)
    return loads


def _room(partition: Partition, pending: int, running: int) -> int:
    """New scheduler jobs the partition's caps allow: every pending one becomes a running
    one, so both caps bound new submissions."""
    return max(0, min(partition.max_pending - pending, partition.max_running - running - pending))


def can_start_here(profile: ClusterProfile, own_live: list[Allocation]) -> bool:
    """Whether this cluster could bind or submit this cycle: a spare of its own, or room
    (counted as `plan_provisioning` counts it)."""
    if any(is_spare(a) for a in own_live):
        return True
    loads = _partition_loads(own_live)
    for partition in profile.partitions:
        load = loads[partition.name]
        if _room(partition, len(load.waiting), len(load.running)) > 0:
            return True
    return False


def _spare_order(alloc: Allocation) -> tuple[int, float]:
    # Running (idle) workers first, then the oldest pending: they are nearest to starting.
    return (0 if alloc.state is AllocationState.RUNNING else 1, alloc.submitted_at.timestamp())


def _shape(job: Job, need: int) -> tuple[str, ...]:
    """What decides whether a k-GPU job fits a group: jobs of one shape fit the same ones."""
    shape = (job.spec.image, need, job.spec.resources, job.spec.placement.allowed_clusters)
    return tuple(repr(part) for part in shape)


def _match(
    jobs: list[Job], spares: list[Allocation], profiles: Mapping[str, ClusterProfile]
) -> tuple[list[Job], set[str]]:
    """Greedy match of jobs to spare allocations: (unmatched jobs, matched allocation ids)."""
    if not spares:  # a full campaign's usual case: nothing to match the queue head against
        return list(jobs), set()
    free = sorted(spares, key=_spare_order)
    whole = [a for a in free if not is_slot(a)]  # one slot alone never fits a k-GPU job
    slots = [a for a in free if is_slot(a)]
    used: set[str] = set()
    unmatched: list[Job] = []
    # Job shapes no group had k free slots for: `used` only grows, so they stay unmatched.
    no_group: set[tuple[object, ...]] = set()
    for job in jobs:
        # A pending allocation has measured no GPUs yet: count it as a possible fit, or a
        # VRAM-bound job would cancel and resubmit it every cycle.
        def fits(a: Allocation, job: Job = job, member: bool = False) -> bool:
            return a.cluster in profiles and fits_allocation(
                job, a, profiles[a.cluster], unmeasured_fits=True, group_member=member
            )

        def member_fits(a: Allocation, job: Job = job) -> bool:
            return fits(a, job, True)

        need = slot_need(job)
        one = next(
            (a for a in (free if need == 1 else whole) if a.id not in used and fits(a)), None
        )
        hit = [one] if one is not None else []
        shape = _shape(job, need) if not hit and need > 1 else None
        if shape is not None and shape not in no_group:
            # k GPUs: k free slots of one group (ADR 0026).
            free_now = (a for a in slots if a.id not in used)
            hit = group_slots(job, free_now, member_fits) or []
            if not hit:
                no_group.add(shape)
        if not hit:
            unmatched.append(job)
        else:
            used.update(a.id for a in hit)
    return unmatched, used


def plan_provisioning(
    profile: ClusterProfile,
    *,
    queued: list[Job],
    allocations: list[Allocation],
    profiles: Mapping[str, ClusterProfile],
    usable_clusters: set[str],
    mode: ClusterMode,
    queue_racing: bool,
    blocked: set[str] | None = None,
    now: datetime | None = None,
) -> ProvisionPlan:
    """Submissions and cancellations for `profile`'s cluster.

    `allocations` are the live allocations of every cluster; `usable_clusters` are those
    currently reachable and enabled (a pending allocation on an unreachable or disabled
    cluster is not counted as supply, so demand moves elsewhere). Only an OPEN cluster submits;
    a DISABLED one (switched off by the operator) also cancels all its pending spares, since
    other clusters no longer count them. Partitions in `blocked` (backing off after workers
    died at start) submit nothing. A partition of N-GPU allocations is requested by the
    packing rule (ADR 0026; `now` dates how long jobs waited).
    """
    jobs = sorted(queued, key=job_order_key)
    live = [a for a in allocations if a.state is not AllocationState.ENDED]
    spares = [a for a in live if is_spare(a)]
    own_spares = [a for a in spares if a.cluster == profile.name]
    running_spares = [a for a in spares if a.state is AllocationState.RUNNING]
    # Idle workers anywhere serve demand first, racing or not.
    if queue_racing:
        unmet, _ = _match(
            jobs, [a for a in running_spares if a.cluster in usable_clusters], profiles
        )
        unmet, kept = _match(unmet, own_spares, profiles)
    else:
        usable = [a for a in spares if a.cluster in usable_clusters or a.cluster == profile.name]
        unmet, kept = _match(jobs, usable, profiles)

    plan = ProvisionPlan(cancel=_cancellations(own_spares, kept, live, mode))
    if mode is not ClusterMode.OPEN:
        return plan
    loads = _partition_loads([a for a in live if a.cluster == profile.name])
    cancelled = {group_of(c) for c in plan.cancel}
    for partition in profile.partitions:
        if blocked and partition.name in blocked:
            continue
        load = loads[partition.name]
        room = _room(partition, len(load.waiting - cancelled), len(load.running))
        if partition.gpus_per_allocation > 1:
            unmet = _submit_groups(plan, profile, partition, unmet, room, now)
            continue
        still: list[Job] = []
        for job in unmet:
            if room > 0 and fits_partition(job, profile, partition):
                plan.submit.append(SubmitIntent(partition=partition.name, image=job.spec.image))
                room -= 1
            else:
                still.append(job)
        unmet = still
    return plan


def _cancellations(
    own_spares: list[Allocation], kept: set[str], live: list[Allocation], mode: ClusterMode
) -> list[str]:
    """Pending allocations nobody needs. A group goes whole (one scancel), and only when none
    of its slots is kept for a job."""
    unwanted = {
        a.scheduler_key
        for a in own_spares
        if a.state is AllocationState.PENDING and (mode is ClusterMode.DISABLED or a.id not in kept)
    }
    if not unwanted:
        return []
    kept_groups = {a.scheduler_key for a in live if a.id in kept or a.job_id is not None}
    if mode is not ClusterMode.DISABLED:
        unwanted -= kept_groups
    return [a.id for a in own_spares if a.scheduler_key in unwanted]


def _submit_groups(
    plan: ProvisionPlan,
    profile: ClusterProfile,
    partition: Partition,
    unmet: list[Job],
    room: int,
    now: datetime | None,
) -> list[Job]:
    """Request allocations of an N-GPU partition while the packing rule asks for one
    (relaymd.daemon.slot_packing); the jobs left for the next partition."""
    while room > 0:
        fill = pack_group(unmet, profile, partition, now)
        if fill.reason is None:
            break
        plan.submit.append(
            SubmitIntent(
                partition=partition.name, image=fill.jobs[0].spec.image, reason=fill.reason
            )
        )
        room -= 1
        packed = {j.id for j in fill.jobs}
        unmet = [j for j in unmet if j.id not in packed]
    return unmet
