"""The cycle's decide and commit: read the rows (one snapshot), decide, and persist the
decisions in one write transaction that holds SQLite's write lock only while it writes.

The decisions are persisted as `decide` made them, never rewritten here. The fencing token
(a job's epoch) has one source, the decision: each job row is written by compare-and-set on
the epoch `decide` read, so a writer that decided from a stale row gets ConflictError and
its whole transaction rolls back, before anything reaches the cluster (invariant 4). The
compare-and-set also covers `updated_at`, so an operator's write between our read and our
commit (say, a cancel request) refuses the commit too; the next cycle decides again.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel

from relaymd.daemon.audit import prepare_events, record_events
from relaymd.daemon.claim_checks import ClaimVerdicts
from relaymd.daemon.cycle_jobs import load_cycle_rows
from relaymd.daemon.decide import decide_cycle
from relaymd.daemon.decide.decisions import CycleDecisions, DecideInput
from relaymd.daemon.heartbeat_news import HeldNews, NewsToWrite
from relaymd.daemon.provision import ClusterMode
from relaymd.daemon.read_step import ReadResult
from relaymd.daemon.scope import CycleScope
from relaymd.ids import new_allocation_id
from relaymd.logging import get_logger
from relaymd.models import Allocation, Job, utcnow
from relaymd.models.backoff import PartitionBackoff
from relaymd.models.state import ClusterStatus
from relaymd.state import ConflictError, NotFoundError
from relaymd.state import queries as q

if TYPE_CHECKING:
    from relaymd.state.async_store import AsyncStateStore

log = get_logger(__name__)


class Committed(BaseModel):
    decisions: CycleDecisions
    allocations: list[Allocation]  # the rows read, as they are after the commit
    jobs: dict[str, Job]  # the jobs decide saw, as they are after the commit
    decide_cpu_s: float  # parsing the read and deciding


async def _decide_input(
    scope: CycleScope, read: ReadResult, submit_ok: bool, verdicts: ClaimVerdicts
) -> DecideInput:
    """The rows decide works from, read from one snapshot."""
    ctx, profile, carried = scope.ctx, scope.profile, scope.carried
    store = ctx.store
    read_ids = {a.id for a in read.allocations}
    allocs, all_live, jobs = await load_cycle_rows(
        store, profile, read.allocations, carried.want_log
    )
    allocs = carried.news.lay_over_allocations(allocs)
    jobs = carried.news.lay_over_jobs(jobs)
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
    return inp


async def decide_and_commit(
    scope: CycleScope, read: ReadResult, submit_ok: bool, verdicts: ClaimVerdicts
) -> Committed:
    """Read the rows from one snapshot, decide outside SQLite's write lock, then persist in
    one write transaction. The job rows are written by compare-and-set on the copies decide
    read, so a CLI write in between refuses the whole commit (ADR 0021); the daemon's own
    clusters never interleave (they decide under `store_lock`)."""
    store, profile = scope.ctx.store, scope.profile
    async with scope.ctx.store_lock:
        async with store.snapshot():
            inp = await _decide_input(scope, read, submit_ok, verdicts)
        cpu = time.process_time()
        decisions = decide_cycle(inp, new_allocation_id)
        decide_cpu_s = time.process_time() - cpu + read.parse_cpu_s
        read_allocations = {a.id: a for a in inp.allocations}
        news = scope.carried.news.split(
            decisions, read_allocations, inp.jobs, inp.settings.heartbeat_write_every
        )
        prepared = PreparedWrites(profile.name, inp.jobs, decisions, read_allocations, news)
        async with store.transaction():
            await persist_prepared(store, prepared)
            if decisions.backoff != inp.backoff:  # in the same transaction as the ends it counts
                await save_backoff(store, profile.name, decisions.backoff)
    scope.carried.after_commit(read.snapshot, decisions)
    scope.carried.news.after_commit(news)
    merged = {a.id: a for a in inp.allocations}
    merged.update(decisions.allocations)
    merged.update({a.id: a for a in decisions.new_allocations})
    return Committed(
        decisions=decisions,
        allocations=list(merged.values()),
        jobs={**inp.jobs, **decisions.jobs},
        decide_cpu_s=decide_cpu_s,
    )


async def flush_news(store: AsyncStateStore, news: HeldNews) -> None:
    """Write every heartbeat's news still held in memory: a daemon that stops cleanly leaves
    the state file as current as its memory (ADR 0027). A job some writer changed since keeps
    its row (the news is only a speed)."""
    rows = news.everything()
    if not rows.allocations and not rows.jobs:
        return
    try:
        async with store.transaction():
            await store.run(q.update_allocations(rows.allocations))
            await store.run(q.update_jobs_as_read(rows.jobs))
    except ConflictError:
        async with store.transaction():
            await store.run(q.update_allocations(rows.allocations))
    news.allocations.clear()
    news.jobs.clear()
    log.info("heartbeat_news_written", allocations=len(rows.allocations), jobs=len(rows.jobs))


async def save_backoff(
    store: AsyncStateStore, cluster: str, backoff: dict[str, PartitionBackoff]
) -> None:
    """The cluster's backoff records onto its status row as it is now (the operator may have
    flipped its switch since decide read it)."""
    current = await store.get_cluster_status(cluster) or ClusterStatus(name=cluster)
    await store.upsert_cluster_status(current.model_copy(update={"backoff": backoff}))


class PreparedWrites:
    """One cycle's batched row writes, stamped and serialized before the write transaction
    begins, so SQLite's write lock is held for the statements alone (ADR 0021)."""

    def __init__(
        self,
        cluster: str,
        read_jobs: Mapping[str, Job],
        d: CycleDecisions,
        read_allocations: Mapping[str, Allocation] | None = None,
        news: NewsToWrite | None = None,
    ) -> None:
        self.cluster = cluster
        self.decisions = d
        # Without `news`, every changed row; with it, those not held (ADR 0027).
        allocations = news.allocations if news else list(d.allocations.values())
        jobs = news.jobs if news else [(job, read_jobs[job.id]) for job in d.jobs.values()]
        self.allocations = q.update_allocations(allocations, read_allocations)
        self.jobs = q.update_jobs_as_read(jobs)
        self.times = [
            q.SegmentTimesUpdate(
                job_id=t.job_id,
                epoch=t.epoch,
                noticed_at=t.noticed_at,
                worker_started_at=t.worker_started_at,
                worker_ended_at=t.worker_ended_at,
            )
            for t in d.segment_times
        ]
        self.audits = prepare_events(cluster, d.audits)


async def persist(
    store: AsyncStateStore, cluster: str, read_jobs: Mapping[str, Job], d: CycleDecisions
) -> None:
    """Write one cycle's decisions as they are; call inside the cycle's transaction.
    `read_jobs` are the rows decide read: each job is written only if its epoch is still
    the one read there (ConflictError otherwise)."""
    await persist_prepared(store, PreparedWrites(cluster, read_jobs, d))


async def persist_prepared(store: AsyncStateStore, prepared: PreparedWrites) -> None:
    """`persist` of writes prepared before the transaction; call inside it."""
    d = prepared.decisions
    for alloc in d.new_allocations:
        await store.insert_allocation(alloc)
    # One statement each for every changed allocation and job row, however many.
    await store.run(prepared.allocations)
    await store.run(prepared.jobs)
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
    # One read and one write for every worker time; a segment with no row is skipped (the
    # same gap as above).
    await store.record_many_segment_times(prepared.times)
    await record_events(store, prepared.audits)
