"""How many allocations to submit or cancel on one cluster, per (partition, image).

Demand is the queued jobs; supply is the live allocations nobody is bound to (idle workers,
pending and submitting allocations). Without queue racing supply is counted on every usable
cluster, so one job causes one allocation somewhere; with racing each cluster provisions for
the unmet demand on its own and the surplus is cancelled once the jobs are bound.
Pure: the caller gives the store's view and gets a `ProvisionPlan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from pydantic import BaseModel, Field

from relaymd.daemon.eligibility import fits_allocation, fits_partition, job_order_key
from relaymd.models import Allocation, AllocationState, ClusterProfile, Job


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
    )


def _spare_order(alloc: Allocation) -> tuple[int, float]:
    # Running (idle) workers first, then the oldest pending: they are nearest to starting.
    return (0 if alloc.state is AllocationState.RUNNING else 1, alloc.submitted_at.timestamp())


def _match(
    jobs: list[Job], spares: list[Allocation], profiles: Mapping[str, ClusterProfile]
) -> tuple[list[Job], set[str]]:
    """Greedy match of jobs to spare allocations: (unmatched jobs, matched allocation ids)."""
    free = sorted(spares, key=_spare_order)
    used: set[str] = set()
    unmatched: list[Job] = []
    for job in jobs:
        hit = next(
            (
                a
                for a in free
                if a.id not in used
                and a.cluster in profiles
                # A pending allocation has measured no GPUs yet: count it as a possible fit,
                # or a VRAM-bound job would cancel and resubmit it every cycle.
                and fits_allocation(job, a, profiles[a.cluster], unmeasured_fits=True)
            ),
            None,
        )
        if hit is None:
            unmatched.append(job)
        else:
            used.add(hit.id)
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
) -> ProvisionPlan:
    """Submissions and cancellations for `profile`'s cluster.

    `allocations` are the live allocations of every cluster; `usable_clusters` are those
    currently reachable and enabled (a pending allocation on an unreachable or disabled
    cluster is not counted as supply, so demand moves elsewhere). Only an OPEN cluster submits;
    a DISABLED one (switched off by the operator) also cancels all its pending spares, since
    other clusters no longer count them. Partitions in `blocked` (backing off after workers
    died at start) submit nothing.
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

    plan = ProvisionPlan()
    for alloc in own_spares:
        if alloc.state is AllocationState.PENDING and (
            mode is ClusterMode.DISABLED or alloc.id not in kept
        ):
            plan.cancel.append(alloc.id)

    if mode is not ClusterMode.OPEN:
        return plan
    own_live = [a for a in live if a.cluster == profile.name]
    for partition in profile.partitions:
        if blocked and partition.name in blocked:
            continue
        in_part = [a for a in own_live if a.partition == partition.name]
        pending = sum(
            a.state in (AllocationState.PENDING, AllocationState.SUBMITTING) for a in in_part
        )
        pending -= sum(a.id in plan.cancel for a in in_part)
        running = sum(a.state is AllocationState.RUNNING for a in in_part)
        # Every pending allocation becomes a running one: both caps bound new submissions.
        room = max(
            0,
            min(partition.max_pending - pending, partition.max_running - running - pending),
        )
        still: list[Job] = []
        for job in unmet:
            if room > 0 and fits_partition(job, profile, partition):
                plan.submit.append(SubmitIntent(partition=partition.name, image=job.spec.image))
                room -= 1
            else:
                still.append(job)
        unmet = still
    return plan
