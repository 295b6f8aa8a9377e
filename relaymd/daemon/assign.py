"""Late binding: queued jobs to idle allocations, best match first (docs/architecture.md).

Pure: takes the idle allocations of one cluster (fresh heartbeat, worker idle, unbound) and
the queued jobs, returns pairs. The caller fences each pair with a new epoch.
"""

from __future__ import annotations

from pydantic import BaseModel

from relaymd.daemon.eligibility import fits_allocation, is_slot, job_order_key
from relaymd.models import Allocation, ClusterProfile, Job


class Binding(BaseModel):
    job_id: str
    allocation_id: str


def _gpu_rank(alloc: Allocation, profile: ClusterProfile) -> int:
    """Higher for GPUs earlier in profile.preferred_gpus; 0 when unranked or unknown."""
    names = [g.name.lower() for g in alloc.gpus]
    ranking = [p.lower() for p in profile.preferred_gpus]
    for index, wanted in enumerate(ranking):
        if any(wanted in name for name in names):
            return len(ranking) - index
    return 0


def score(job: Job, alloc: Allocation, profile: ClusterProfile) -> tuple[float, ...]:
    """Bigger is better: preferred cluster, preferred GPU model, fewest wasted GPUs, VRAM."""
    preferred = 1.0 if alloc.cluster in job.spec.placement.preferred_clusters else 0.0
    try:
        offered = profile.partition(alloc.partition).gpus_per_allocation
    except KeyError:
        offered = job.spec.resources.gpus
    if is_slot(alloc):
        offered = 1  # a GPU slot offers its own GPU; its group's others serve other jobs
    wasted = offered - job.spec.resources.gpus
    vram = min((g.memory_gib for g in alloc.gpus), default=0.0)
    return (preferred, float(_gpu_rank(alloc, profile)), -float(wasted), -vram)


def assign(idle: list[Allocation], queued: list[Job], profile: ClusterProfile) -> list[Binding]:
    """Bind jobs (priority order) to the best-scoring idle allocation each can use.

    VRAM is a tie-breaker in reverse (smallest sufficient GPU first) so big GPUs stay free for
    jobs that need them.
    """
    free = list(idle)
    bindings: list[Binding] = []
    for job in sorted(queued, key=job_order_key):
        candidates = [a for a in free if fits_allocation(job, a, profile)]
        if not candidates:
            continue
        best = max(candidates, key=lambda a: (score(job, a, profile), -a.submitted_at.timestamp()))
        free.remove(best)
        bindings.append(Binding(job_id=job.id, allocation_id=best.id))
    return bindings


def held_for_preferred(
    queued: list[Job],
    idle_elsewhere: list[Allocation],
    profiles: dict[str, ClusterProfile],
    here: str,
) -> set[str]:
    """Jobs this cluster should leave alone because a cluster they prefer has an idle
    allocation that fits them (each such allocation held for one job, in priority order).

    Each cluster binds only its own idle allocations, so without this a job's preference
    would lose to whichever cluster happens to cycle first.
    """
    free = [a for a in idle_elsewhere if a.cluster != here and a.cluster in profiles]
    held: set[str] = set()
    for job in sorted(queued, key=job_order_key):
        preferred = job.spec.placement.preferred_clusters
        if not preferred or here in preferred:
            continue
        match = next(
            (
                a
                for a in free
                if a.cluster in preferred and fits_allocation(job, a, profiles[a.cluster])
            ),
            None,
        )
        if match is not None:
            free.remove(match)
            held.add(job.id)
    return held
