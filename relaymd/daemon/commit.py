"""The cycle's decide and commit: read the rows, decide, and persist the decisions, all in
one write transaction (the CLI cannot change a row between our read and our write of it).

The decisions are persisted as `decide` made them, never rewritten here. The fencing token
(a job's epoch) has one source, the decision: each job row is written by compare-and-set on
the epoch `decide` read, so a writer that decided from a stale row gets ConflictError and
its whole transaction rolls back, before anything reaches the cluster (invariant 4).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel

from relaymd.daemon.audit import record_event
from relaymd.daemon.claim_checks import ClaimVerdicts
from relaymd.daemon.decide import decide_cycle
from relaymd.daemon.decide.decisions import CycleDecisions, DecideInput
from relaymd.daemon.provision import ClusterMode
from relaymd.daemon.read_step import LIVE_STATES, ReadResult
from relaymd.daemon.scope import CycleScope
from relaymd.ids import new_allocation_id
from relaymd.logging import get_logger
from relaymd.models import Allocation, Job, JobState, utcnow
from relaymd.models.state import ClusterStatus
from relaymd.state import NotFoundError

if TYPE_CHECKING:
    from relaymd.state.async_store import AsyncStateStore

log = get_logger(__name__)


class Committed(BaseModel):
    decisions: CycleDecisions
    allocations: list[Allocation]  # the rows read, as they are after the commit
    jobs: dict[str, Job]  # the jobs decide saw, as they are after the commit
    decide_cpu_s: float  # parsing the read and deciding


async def load_jobs(
    store: AsyncStateStore, allocs: list[Allocation], want_log: dict[str, str]
) -> dict[str, Job]:
    """Every active job, plus any job a read allocation or an owed log tail is bound to."""
    jobs = {j.id: j for j in await store.list_jobs(states=JobState.active())}
    wanted = [a.job_id for a in allocs if a.job_id] + list(want_log.values())
    for job_id in wanted:
        if job_id not in jobs:
            job = await store.get_job(job_id)
            if job is not None:
                jobs[job.id] = job
    return jobs


async def _decide_input(
    scope: CycleScope, read: ReadResult, submit_ok: bool, verdicts: ClaimVerdicts
) -> tuple[DecideInput, ClusterStatus | None]:
    """The rows decide works from, read inside the transaction; and this cluster's status."""
    ctx, profile, carried = scope.ctx, scope.profile, scope.carried
    store = ctx.store
    read_ids = {a.id for a in read.allocations}
    all_live = await store.list_allocations(states=LIVE_STATES)
    live_by_id = {a.id: a for a in all_live}
    allocs = []
    for alloc_id in read_ids:  # only the ended ones still owed a log tail are not live
        alloc = live_by_id.get(alloc_id) or await store.get_allocation(alloc_id)
        if alloc is not None:
            allocs.append(alloc)
    jobs = await load_jobs(store, allocs, carried.want_log)
    # Fresh switches: a disabled cluster's pending allocations stop counting as supply
    # elsewhere, and its own runner cancels them.
    statuses = await store.list_cluster_status()
    ctx.note_cluster_status(statuses)
    own = next((c for c in statuses if c.name == profile.name), None)
    inp = DecideInput(
        now=utcnow(),
        profile=profile,
        profiles=ctx.profiles,
        settings=ctx.settings,
        mode=ClusterMode.of(switched_on=ctx.switched_on(profile), submit_ok=submit_ok),
        usable_clusters=ctx.usable_clusters(),
        snapshot=read.snapshot,
        allocations=allocs,
        all_live=all_live,
        jobs=jobs,
        verified=verdicts.verified,
        rejected_claims=verdicts.rejected,
        submit_grace_s=profile.command_timeout_s + 15,
        want_log={k: v for k, v in carried.want_log.items() if k in read_ids},
        vanished_since=carried.vanished_since,
        vanished_grace_s=max(30.0, 3 * profile.poll.min_interval_s),
        daemon_started_at=ctx.started_at,
        backoff=own.backoff if own is not None else {},
    )
    return inp, own


async def decide_and_commit(
    scope: CycleScope, read: ReadResult, submit_ok: bool, verdicts: ClaimVerdicts
) -> Committed:
    store, profile = scope.ctx.store, scope.profile
    async with scope.ctx.store_lock, store.transaction():
        inp, own = await _decide_input(scope, read, submit_ok, verdicts)
        cpu = time.process_time()
        decisions = decide_cycle(inp, new_allocation_id)
        decide_cpu_s = time.process_time() - cpu + read.parse_cpu_s
        await persist(store, profile.name, inp.jobs, decisions)
        if decisions.backoff != inp.backoff:  # in the same transaction as the ends it counts
            await store.upsert_cluster_status(
                (own or ClusterStatus(name=profile.name)).model_copy(
                    update={"backoff": decisions.backoff}
                )
            )
    scope.carried.after_commit(read.snapshot, decisions)
    merged = {a.id: a for a in inp.allocations}
    merged.update(decisions.allocations)
    merged.update({a.id: a for a in decisions.new_allocations})
    return Committed(
        decisions=decisions,
        allocations=list(merged.values()),
        jobs={**inp.jobs, **decisions.jobs},
        decide_cpu_s=decide_cpu_s,
    )


async def persist(
    store: AsyncStateStore, cluster: str, read_jobs: Mapping[str, Job], d: CycleDecisions
) -> None:
    """Write one cycle's decisions as they are; call inside the cycle's transaction.
    `read_jobs` are the rows decide read: each job is written only if its epoch is still
    the one read there (ConflictError otherwise)."""
    for alloc in d.new_allocations:
        await store.insert_allocation(alloc)
    for alloc in d.allocations.values():
        await store.update_allocation(alloc)
    for job in d.jobs.values():
        await store.update_job_at_epoch(job, expected_epoch=read_jobs[job.id].epoch)
    for close in d.closed_segments:
        try:
            async with store.transaction():  # a savepoint: a miss undoes only itself
                await store.close_segment(
                    close.job_id, close.epoch, close.outcome, close.end_step, reason=close.reason
                )
        except NotFoundError:
            # A job bound before segments were recorded: the history has a gap, the relay
            # goes on.
            log.warning("segment_missing", job_id=close.job_id, epoch=close.epoch)
    for seg in d.new_segments:
        await store.insert_segment(seg)
    for times in d.segment_times:
        with contextlib.suppress(NotFoundError):  # no row: the same gap as above
            await store.record_segment_times(
                times.job_id,
                times.epoch,
                times.noticed_at,
                times.worker_started_at,
                times.worker_ended_at,
            )
    for audit in d.audits:
        await record_event(
            store,
            cluster,
            audit.kind,
            audit.message,
            allocation_id=audit.allocation_id,
            job_id=audit.job_id,
            detail=audit.message,
        )
