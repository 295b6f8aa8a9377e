"""Late binding: a queued job goes to an idle worker that is alive now, under a new epoch.

Jobs are bound only to workers seen idle and alive in this cycle's read, never to an
allocation that has not started; a job that prefers another cluster with an idle worker
waits for it there (relaymd.daemon.assign).
"""

from __future__ import annotations

from relaymd.daemon.assign import assign, held_for_preferred
from relaymd.daemon.decide import slots
from relaymd.daemon.decide.cycle import Cycle
from relaymd.daemon.eligibility import time_for_a_segment
from relaymd.daemon.liveness import heartbeat_counts, is_stale
from relaymd.daemon.provision import ClusterMode, is_spare
from relaymd.mailbox.carrier import AllocationFiles
from relaymd.mailbox.models import WorkerState
from relaymd.models import Allocation, AllocationState


def _idle_here(cycle: Cycle, heartbeats: dict[str, AllocationFiles]) -> list[Allocation]:
    """This cluster's workers that said they are idle, alive, with time left for a segment."""
    idle: list[Allocation] = []
    for alloc in cycle.allocs.values():
        files = heartbeats.get(alloc.id)
        beat = files.heartbeat if files else None
        if (
            alloc.state is AllocationState.RUNNING
            and is_spare(alloc)
            and beat is not None
            and beat.state is WorkerState.IDLE
            and heartbeat_counts(alloc.id, None, beat)
            # No restart grace here: a job is bound only to a worker seen alive.
            and not is_stale(alloc, cycle.now, cycle.inp.settings.stale_after_s)
            and time_for_a_segment(beat, cycle.now, cycle.inp.settings.min_segment_s)
        ):
            idle.append(alloc)
    return idle


def _idle_elsewhere(cycle: Cycle) -> list[Allocation]:
    """Idle workers on other usable clusters, as their rows show: alive, running, unbound."""
    return [
        a
        for a in cycle.inp.all_live
        if a.cluster != cycle.inp.profile.name
        and a.cluster in cycle.inp.usable_clusters
        and a.state is AllocationState.RUNNING
        and is_spare(a)
        and a.last_seq is not None
        and not is_stale(a, cycle.now, cycle.inp.settings.stale_after_s)
    ]


def bind(cycle: Cycle, heartbeats: dict[str, AllocationFiles]) -> None:
    if cycle.inp.mode is ClusterMode.DISABLED:
        return  # nothing new starts on a disabled cluster; its idle workers exit idle
    idle = _idle_here(cycle, heartbeats)
    if not idle:  # a full campaign's usual case: nothing here to bind to
        return
    queued = cycle.queued()
    idle_elsewhere = _idle_elsewhere(cycle)
    held = held_for_preferred(queued, idle_elsewhere, cycle.inp.profiles, cycle.inp.profile.name)
    queued = [j for j in queued if j.id not in held]
    # Jobs that need several GPUs first: they need k idle slots of one group (ADR 0026).
    taken, bound = slots.bind_groups(cycle, idle, queued)
    idle = [a for a in idle if a.id not in taken]
    queued = [j for j in queued if j.id not in bound]
    for binding in assign(idle, queued, cycle.inp.profile):
        job = cycle.jobs[binding.job_id]
        alloc = cycle.allocs[binding.allocation_id]
        # The one source of epochs (persisted by compare-and-set); a pre-written one is skipped.
        epoch = max(job.epoch, job.prewritten_epoch) + 1
        job = cycle.start_epoch(job, alloc, epoch)
        cycle.put_alloc(alloc.model_copy(update={"job_id": job.id}))
        cycle.out.bound.append(job.id)
        cycle.audit(
            "job_assigned",
            f"epoch {epoch} on {alloc.cluster}/{alloc.partition}",
            job_id=job.id,
            alloc_id=alloc.id,
        )
