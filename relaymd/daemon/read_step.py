"""The cycle's read: one round trip that runs the scheduler query and reads every live
allocation's mailbox files (and the log tails still owed), parsed into a snapshot."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from relaymd.daemon.poll_outcome import SnapshotError
from relaymd.daemon.scope import CycleScope
from relaymd.mailbox.carrier import ClusterSnapshot, ReadRequest
from relaymd.mailbox.scratch import SchedulerQuery
from relaymd.models import Allocation, AllocationState

if TYPE_CHECKING:
    from relaymd.state.async_store import AsyncStateStore

LIVE_STATES = [AllocationState.SUBMITTING, AllocationState.PENDING, AllocationState.RUNNING]


class ReadResult(BaseModel):
    snapshot: ClusterSnapshot
    allocations: list[Allocation]  # the rows the read asked about
    parse_cpu_s: float


async def _requests(
    store: AsyncStateStore, cluster: str, want_log: dict[str, str]
) -> tuple[list[Allocation], list[ReadRequest]]:
    """This cluster's live rows, then the ended ones still owed a log tail."""
    allocs = (await store.kept_rows(cluster)).mine
    requests = [
        ReadRequest(allocation_id=a.id, events_offset=a.events_offset, skipping=a.events_skipping)
        for a in allocs
    ]
    for alloc_id in list(want_log):
        ended = await store.get_allocation(alloc_id)
        if ended is None:
            want_log.pop(alloc_id)
            continue
        allocs.append(ended)
        requests.append(
            ReadRequest(
                allocation_id=alloc_id,
                events_offset=ended.events_offset,
                want_log=True,
                skipping=ended.events_skipping,
            )
        )
    return allocs, requests


async def read_cluster(scope: CycleScope) -> ReadResult:
    store, profile, scheduler, carried = (
        scope.ctx.store,
        scope.profile,
        scope.scheduler,
        scope.carried,
    )
    allocs, requests = await _requests(store, profile.name, carried.want_log)
    # Ids whose end the scheduler should report (sacct) if they are no longer live.
    sched_ids = [
        a.scheduler_id for a in allocs if a.scheduler_id and a.state is not AllocationState.ENDED
    ]
    query = scheduler.query_snippet(profile, sched_ids)
    sweep = None
    if not carried.swept:
        sweep = sorted(a.id for a in (await store.kept_rows(profile.name)).everything)
    snapshot = await scope.carrier.read(
        requests, sweep_keep=sweep, query=SchedulerQuery(query, scheduler.parse_query)
    )
    parse_cpu_s = scope.carrier.last_parse_cpu_s
    if not snapshot.query_ok:
        raise SnapshotError(f"{profile.name}: scheduler query failed: {snapshot.query_error}")
    carried.swept = True
    return ReadResult(snapshot=snapshot, allocations=allocs, parse_cpu_s=parse_cpu_s)
