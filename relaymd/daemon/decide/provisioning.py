"""Supply for what is left queued and for jobs about to hand off: submit allocations, cancel
unneeded pending ones, and back off partitions whose workers die at start
(relaymd.daemon.provision, .start_backoff).
"""

from __future__ import annotations

from collections.abc import Callable

from relaymd.daemon.decide import warm
from relaymd.daemon.decide.cycle import Cycle
from relaymd.daemon.provision import ClusterMode, ProvisionPlan, can_start_here, plan_provisioning
from relaymd.daemon.start_backoff import AllocationEnd, blocked_partitions, update_backoff
from relaymd.ids import slot_allocation_id
from relaymd.models import Allocation, AllocationState, Job


def track_start_failures(cycle: Cycle, ends: list[AllocationEnd]) -> None:
    """Update the per-partition backoff from this cycle's ends (audited when it starts)."""
    # A worker heard from for the first time proves the partition can start workers.
    seen_before = {a.id for a in cycle.inp.allocations if a.last_seq is not None}
    reported = {
        a.partition
        for a in cycle.allocs.values()
        if a.last_seq is not None and a.id not in seen_before
    }
    before = cycle.inp.backoff
    # A GPU group dying at start is one failed start, not one per slot (ADR 0026).
    per_group: dict[str, AllocationEnd] = {}
    for end in ends:
        per_group.setdefault(end.allocation.scheduler_key, end)
    firsts = list(per_group.values())
    after = update_backoff(before, firsts, reported, cycle.inp.settings, cycle.now)
    cycle.out.backoff = after
    for name, record in after.items():
        old = before.get(name)
        if record.until is not None and (old is None or old.until != record.until):
            cycle.audit(
                "partition_backoff",
                record.describe(cycle.inp.profile.name, cycle.now),
                alloc_id=record.last_allocation_id,
            )


def provision(cycle: Cycle, new_id: Callable[[], str]) -> None:
    live = {a.id: a for a in cycle.inp.all_live}
    live.update({a.id: a for a in cycle.allocs.values()})
    plan = plan_provisioning(
        cycle.inp.profile,
        # Jobs about to hand off are demand too: their next allocation should be running
        # (and pre-written) when the handoff comes, not submitted after it (ADR 0009).
        queued=cycle.queued() + _successor_demand(cycle),
        allocations=[a for a in live.values() if a.state is not AllocationState.ENDED],
        profiles=cycle.inp.profiles,
        usable_clusters=cycle.inp.usable_clusters,
        mode=cycle.inp.mode,
        queue_racing=cycle.inp.settings.queue_racing,
        blocked=blocked_partitions(cycle.out.backoff, cycle.now),
        now=cycle.now,
    )
    _cancel(cycle, plan)
    for intent in plan.submit:
        partition = cycle.inp.profile.partition(intent.partition)
        rows = _new_rows(cycle, intent.partition, intent.image, new_id())
        cycle.out.new_allocations.extend(rows)
        why = f" ({len(rows)} GPU slots: {intent.reason})" if len(rows) > 1 else ""
        cycle.audit(
            "allocation_submitting",
            f"{partition.name} for image {intent.image}{why}",
            alloc_id=rows[0].id,
        )


def _successor_demand(cycle: Cycle) -> list[Job]:
    """Jobs about to hand off, as demand: only while this cluster could start something (a
    spare of its own or room to submit); otherwise nothing here could meet it."""
    own = [a for a in cycle.allocs.values() if a.state is not AllocationState.ENDED]
    if not can_start_here(cycle.inp.profile, own):
        return []
    return warm.successor_demand(cycle, cycle.inp.snapshot.files)


def _new_rows(cycle: Cycle, partition_name: str, image: str, new_id: str) -> list[Allocation]:
    """The rows of one submit: one allocation, or a group of one slot per GPU (ADR 0026)."""
    partition = cycle.inp.profile.partition(partition_name)
    slots = partition.gpus_per_allocation
    common = {
        "cluster": cycle.inp.profile.name,
        "partition": partition.name,
        "image": image,
        "state": AllocationState.SUBMITTING,
        "walltime_s": partition.walltime_s,
        "submitted_at": cycle.now,
    }
    if slots < 2:
        return [Allocation(id=new_id, **common)]
    return [
        Allocation(
            id=slot_allocation_id(new_id, i), group_id=new_id, slot=i, slot_count=slots, **common
        )
        for i in range(slots)
    ]


def _cancel(cycle: Cycle, plan: ProvisionPlan) -> None:
    reason = "cluster disabled" if cycle.inp.mode is ClusterMode.DISABLED else "not needed"
    for alloc_id in plan.cancel:
        alloc = cycle.allocs.get(alloc_id)
        if alloc is None or alloc.id in cycle.out.cancel or not alloc.scheduler_id:
            continue
        # stop_requested_at puts it on the stop-grace path: if this scancel is lost (crash,
        # transport error) it is sent again until the scheduler reports the end.
        cycle.put_alloc(
            alloc.model_copy(update={"end_reason": reason, "stop_requested_at": cycle.now})
        )
        cycle.out.cancel[alloc.id] = alloc.scheduler_id
        cycle.audit("allocation_cancel", f"pending allocation: {reason}", alloc_id=alloc.id)
