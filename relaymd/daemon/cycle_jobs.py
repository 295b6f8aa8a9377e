"""Which job rows one cluster's cycle loads: what its facts touch, not every active job.

Decide reads a job when an allocation read this cycle is bound to it or reserved for it, when
a log tail is owed to it, when it carries an operator request, or when it waits at the head
of the queue. Everything else stays in the store (ADR 0021): at 10 000 running jobs and
100 000 queued ones, decoding every active row every cycle cost seconds.

The queue head is a bounded look in priority order. It is enough whenever this cluster can
start nothing new: no spare allocation of its own (idle, pending or submitting) and no room to
submit in any partition. Otherwise (a binding, a warm decision or a submission is possible,
which is itself a change) the cycle loads every active job, as decide always did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from relaymd.daemon.provision import can_start_here, is_spare
from relaymd.models import Allocation, AllocationState, ClusterProfile, Job, JobState

if TYPE_CHECKING:
    from relaymd.state.async_store import AsyncStateStore

# Queued jobs always looked at, beyond one per spare allocation anywhere (supply to match).
QUEUE_HEAD = 256


def touched_ids(allocs: list[Allocation], want_log: dict[str, str]) -> list[str]:
    """Jobs bound to or reserved by the allocations read, and those owed a log tail."""
    ids = [a.job_id for a in allocs if a.job_id]
    ids += [a.reserved_job_id for a in allocs if a.reserved_job_id]
    return ids + list(want_log.values())


class CycleRows(NamedTuple):
    allocations: list[Allocation]  # this cluster's rows that were read, as they are now
    all_live: list[Allocation]  # what decide needs of every cluster's live rows
    jobs: dict[str, Job]


async def load_cycle_rows(
    store: AsyncStateStore,
    profile: ClusterProfile,
    read_rows: list[Allocation],
    want_log: dict[str, str],
) -> CycleRows:
    """The rows this cycle's decisions can touch (see the module's docstring). `read_rows`
    are this cluster's rows the read step listed (its live ones and the ended ones owed a
    log tail): they are still current, as only this cluster's runner writes them. While the
    cluster can start nothing, `all_live` is its own live rows plus the other clusters'
    unbound ones: the only ones binding and provisioning look at elsewhere."""
    allocs = list(read_rows)
    own = [a for a in allocs if a.state is not AllocationState.ENDED]
    kept = await store.kept_rows(profile.name, touched_ids(allocs, want_log))
    jobs = kept.jobs
    if can_start_here(profile, own):
        all_live = kept.everything
        jobs.update((j.id, j) for j in await store.list_jobs(states=JobState.active()))
    else:
        all_live = own + [a for a in kept.unbound if a.cluster != profile.name]
        spares = sum(is_spare(a) for a in all_live)
        queued = await store.list_jobs(states=[JobState.QUEUED], limit=QUEUE_HEAD + spares)
        jobs.update((j.id, j) for j in queued)
        requested = await store.jobs_with_operator_request()
        jobs.update((j.id, j) for j in requested if not j.state.is_final)
    return CycleRows(allocs, all_live, jobs)
