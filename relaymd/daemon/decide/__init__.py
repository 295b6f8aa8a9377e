"""One cluster's decisions for one cycle, from the snapshot and the store's rows. Pure.

Order inside a cycle matters: the scheduler's view first (adopt, start, end), then the
worker's events (read after the query, so they explain any end), then liveness, operator
requests, late binding, successor reservations and the release of idle workers, and finally
provisioning on what is left. Everything lands in a `CycleDecisions` (decide/decisions.py)
that the caller persists in one transaction before it writes to the cluster.

Each phase is a module working on one `Cycle` (decide/cycle.py: the working copies of the
rows and the record of what changed): `scheduler_view`, `events`, `heartbeats`, `operator`,
`binding`, `warm` and `provisioning`; `slots` the GPU slots of multi-GPU allocations
(ADR 0026). The rules they apply (classify, evidence, liveness,
assign, provision, start_backoff) are pure functions of models in relaymd/daemon/.
"""

from __future__ import annotations

from collections.abc import Callable

from relaymd.daemon.decide import (
    binding,
    events,
    heartbeats,
    operator,
    provisioning,
    scheduler_view,
    slots,
    warm,
)
from relaymd.daemon.decide.cycle import Cycle
from relaymd.daemon.decide.decisions import CycleDecisions, DecideInput
from relaymd.daemon.start_backoff import AllocationEnd, worker_reported
from relaymd.mailbox.carrier import AllocationFiles
from relaymd.models import Allocation, AllocationState
from relaymd.scheduler.base import SchedulerPhase


def decide_cycle(inp: DecideInput, new_allocation_id: Callable[[], str]) -> CycleDecisions:
    cycle = Cycle(inp)
    ends = _allocations(cycle)
    scheduler_view.cancel_orphans(cycle)
    events.collect_log_tails(cycle)
    operator.carry_out_requests(cycle)
    slots.free_held(cycle)
    files = inp.snapshot.files
    binding.bind(cycle, files)
    warm.reserve_successors(cycle, files)
    warm.release_idle(cycle, files)
    provisioning.track_start_failures(cycle, ends)
    provisioning.provision(cycle, new_allocation_id)
    return cycle.out


def _allocations(cycle: Cycle) -> list[AllocationEnd]:
    """Each read allocation through the scheduler's view, its events and its liveness; the
    ones that ended this cycle, for the start-failure backoff."""
    files = cycle.inp.snapshot.files
    ends: list[AllocationEnd] = []
    # Reserved successors last: their predecessor's handoff is applied first (ADR 0009).
    for alloc in sorted(cycle.allocs.values(), key=lambda a: a.reserved_job_id is not None):
        if alloc.state is AllocationState.ENDED:
            continue
        alloc_files = files.get(alloc.id)
        # Nothing but a heartbeat to judge (the usual case at scale): the phases before
        # liveness would each find nothing to do.
        if not _steady(cycle, alloc, alloc_files):
            seen = _scheduler_and_events(cycle, alloc, alloc_files, ends)
            if seen is None:
                continue
            alloc = seen
        alloc = heartbeats.liveness(cycle, alloc, alloc_files)
        heartbeats.stop_grace(cycle, alloc)
    return ends


def _scheduler_and_events(
    cycle: Cycle, alloc: Allocation, files: AllocationFiles | None, ends: list[AllocationEnd]
) -> Allocation | None:
    """The allocation after the scheduler's view and its events, or None when it ended (then
    recorded in `ends` and closed)."""
    alloc = scheduler_view.observe(cycle, alloc)
    reported = worker_reported(alloc, files)  # before events.apply sets end_reason
    alloc, hold = warm.reservation_before_events(cycle, alloc, files)
    if files is not None and not hold:
        alloc = events.apply(cycle, alloc, files)
    how = slots.exited(cycle, alloc, files) or scheduler_view.ended(cycle, alloc)
    if how is None:
        return alloc
    ends.append(
        AllocationEnd(
            allocation=alloc, state=how.state, exit_code=how.exit_code, worker_reported=reported
        )
    )
    scheduler_view.end(cycle, alloc, how, files)
    return None


def _steady(cycle: Cycle, alloc: Allocation, files: AllocationFiles | None) -> bool:
    """A running allocation with no news but its heartbeat: the scheduler lists it running
    under the id it has, no reservation waits on it, and its events file has nothing new.
    For it, `scheduler_view.observe`, the reservation check, `events.apply`, `slots.exited`
    and `scheduler_view.ended` are no-ops (tests/daemon/test_decide_steady.py holds them to it)."""
    if (
        files is None
        or alloc.state is not AllocationState.RUNNING
        or alloc.reserved_job_id is not None
        or files.events
        or files.oversized_lines
        or files.unusable_lines
        or files.events_offset != alloc.events_offset
        or files.events_skipping != alloc.events_skipping
    ):
        return False
    sj = scheduler_view.scheduler_job(cycle, alloc.scheduler_key)
    return (
        sj is not None
        and sj.phase is SchedulerPhase.RUNNING
        and (not sj.scheduler_id or sj.scheduler_id == alloc.scheduler_id)
    )
