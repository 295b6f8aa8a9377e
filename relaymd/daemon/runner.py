"""One cluster's reconcile cycle: read -> decide -> persist -> write -> persist results.

At most two round trips per cycle (invariant 6). Decisions are committed BEFORE the write that
acts on them (invariant 4: a `submitting` row exists before sbatch runs; an epoch is committed
before the assignment that carries it), and everything written is derived from committed rows,
so a crash anywhere is repaired by the next cycle: a `submitting` row is adopted by job name
or dropped, an assignment is rewritten until the worker shows it took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from relaymd.daemon.context import DaemonContext
from relaymd.daemon.decide import decide_cycle
from relaymd.daemon.decide.decisions import CycleDecisions, DecideInput
from relaymd.daemon.evidence import ClaimKey, advance_refusal, claim_key, claim_shape_refusal
from relaymd.daemon.mailbox_files import (
    assignment_file,
    assignment_needed,
    control_file,
    control_needed,
    credentials_file,
    successor_file,
    successor_needed,
    withdrawal_needed,
)
from relaymd.daemon.provision import ClusterMode
from relaymd.daemon.remote_read import (
    ClusterSnapshot,
    HeartbeatMemo,
    ReadRequest,
    build_read_script,
    parse_read_output,
)
from relaymd.daemon.remote_write import (
    FileRemoval,
    FileWrite,
    SubmitCommand,
    WritePlan,
    build_write_script,
    parse_write_output,
)
from relaymd.ids import new_allocation_id
from relaymd.logging import get_logger
from relaymd.models import (
    ASSIGNMENT_FILE,
    CREDENTIALS_FILE,
    Allocation,
    AllocationState,
    CheckpointRef,
    ClusterProfile,
    EventKind,
    Job,
    JobState,
    utcnow,
)
from relaymd.models.state import ClusterReachability, ClusterStatus
from relaymd.scheduler.base import alloc_dir

log = get_logger(__name__)

# Fault injection for the crash-safety tests only: kill this process with SIGKILL right before
# or right after the write that runs sbatch (the two moments invariant 4 is about).
_FAULT = os.environ.get("RELAYMD_TEST_FAULT", "")


def _maybe_crash(point: str) -> None:
    if point == _FAULT:
        log.warning("test_fault_crash", point=point)
        os.kill(os.getpid(), signal.SIGKILL)


LIVE_STATES = [AllocationState.SUBMITTING, AllocationState.PENDING, AllocationState.RUNNING]
MAX_CLAIMS_PER_JOB = 16  # storage checks of reported checkpoints per job and cycle
JOB_SCRIPT = "job.sh"


class CycleReport(BaseModel):
    cluster: str
    ok: bool
    changed: bool = False
    busy: bool = False
    round_trips: int = 0
    error: str | None = None
    decide_cpu_s: float = 0.0


class ClusterRunner:
    def __init__(
        self,
        ctx: DaemonContext,
        profile: ClusterProfile,
        *,
        interactive: bool = False,
        transport_factory: Callable[..., Any] | None = None,
        scheduler: Any = None,
    ) -> None:
        self.ctx = ctx
        self.profile = profile
        self.interactive = interactive
        if transport_factory is None:
            from relaymd.transport import make_transport

            transport_factory = make_transport
        if scheduler is None:
            from relaymd.scheduler import make_scheduler

            scheduler = make_scheduler(profile)
        self._transport_factory = transport_factory
        self.transport: Any = None
        self.scheduler = scheduler
        self.want_log: dict[str, str] = {}
        self.heartbeats = HeartbeatMemo()  # last parsed heartbeats: unchanged ones stay home
        self.vanished_since: dict[str, datetime] = {}
        self.interval = profile.poll.min_interval_s
        self.cycles = 0
        self.last_parse_cpu_s = 0.0
        self.last_decide_cpu_s = 0.0
        self._jobs_after: dict[str, Job] = {}
        # Credentials still to remove from ended allocations' folders (until a write confirms);
        # the first read after a start sweeps whatever a crash left behind.
        self._credentials_owed: set[str] = set()
        self._swept = False
        self._failure_log = RepeatedWarning()
        self.config_error = self._check_profile()

    @property
    def name(self) -> str:
        return self.profile.name

    def _check_profile(self) -> str | None:
        """Render a job script per partition and image once: a profile value that cannot go
        into a script safely stops submissions on this cluster (with the reason in its status)
        instead of failing every cycle."""
        images = list(self.profile.images) or ["openmm"]
        for partition in self.profile.partitions:
            for image in images:
                probe = Allocation(
                    id="a0000000000000000",
                    cluster=self.name,
                    partition=partition.name,
                    image=image,
                    walltime_s=partition.walltime_s,
                )
                try:
                    self.scheduler.render_job_script(probe, self.profile, self._worker_args(probe))
                    self.scheduler.submit_snippet(probe, f"{self.profile.scratch}/x/{JOB_SCRIPT}")
                except ValueError as exc:
                    log.error("cluster_profile_unsafe", cluster=self.name, error=str(exc))
                    return f"cluster {self.name}: {exc}"
        return None

    async def close(self) -> None:
        if self.transport is not None:
            transport, self.transport = self.transport, None
            result = transport.close()
            if asyncio.iscoroutine(result):
                await result

    def _transport(self) -> Any:
        if self.transport is None:
            self.transport = self._transport_factory(self.profile, interactive=self.interactive)
        return self.transport

    async def _run(self, script: str) -> Any:
        return await self._transport().run(script, timeout=self.profile.command_timeout_s)

    # -- the cycle ---------------------------------------------------------------------
    async def cycle(self) -> CycleReport:
        from relaymd.transport import (
            HostKeyRejected,
            HostUnreachable,
            NeedsAuth,
            RemoteTimeout,
            TransportError,
        )

        started = utcnow()
        # A misconfigured profile keeps watching what exists but submits nothing.
        submit_ok = self.config_error is None
        report = CycleReport(cluster=self.name, ok=False)
        trips_before = self._round_trips()
        try:
            snapshot, read_allocs = await self._read()
            decisions, allocs_after = await self._decide_and_commit(
                snapshot, read_allocs, submit_ok
            )
            await self._write(decisions, allocs_after, snapshot)
        except (
            NeedsAuth,
            HostKeyRejected,
            HostUnreachable,
            RemoteTimeout,
            TransportError,
            SnapshotError,
        ) as exc:
            await self._failed(failure_reachability(exc), exc, started)
            report.error = str(exc)
            await self.close()
            return report
        finally:
            report.round_trips = self._round_trips() - trips_before
        report.ok = True
        report.changed = decisions.changed
        report.decide_cpu_s = self.last_decide_cpu_s
        live = [a for a in allocs_after if a.state is not AllocationState.ENDED]
        report.busy = bool(live)
        self.ctx.reachability[self.name] = ClusterReachability.REACHABLE
        self._failure_log.reset()
        await self._status_ok(self._enabled(), started, live)
        if decisions.checkpointed:
            await self._retention(decisions.checkpointed)
        return report

    def _enabled(self) -> bool:
        """The operator's switch as last read from the store (the profile's before that)."""
        return self.ctx.enabled.get(self.name, self.profile.enabled)

    def _round_trips(self) -> int:
        return int(getattr(self.transport, "round_trips", 0)) if self.transport else 0

    async def _read(self) -> tuple[ClusterSnapshot, list[Allocation]]:
        store = self.ctx.store
        allocs = await store.list_allocations(cluster=self.name, states=LIVE_STATES)
        requests = [
            ReadRequest(
                allocation_id=a.id, events_offset=a.events_offset, skipping=a.events_skipping
            )
            for a in allocs
        ]
        for alloc_id in list(self.want_log):
            ended = await store.get_allocation(alloc_id)
            if ended is None:
                self.want_log.pop(alloc_id)
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
        # Ids whose end the scheduler should report (sacct) if they are no longer live.
        sched_ids = [
            a.scheduler_id
            for a in allocs
            if a.scheduler_id and a.state is not AllocationState.ENDED
        ]
        query = self.scheduler.query_snippet(self.profile, sched_ids)
        sweep = None
        if not self._swept:
            sweep = sorted(a.id for a in await store.list_allocations(states=LIVE_STATES))
        script, token = build_read_script(
            self.profile.scratch, query, requests, sweep_keep=sweep, memo=self.heartbeats
        )
        result = await self._run(script)
        cpu = time.process_time()
        snapshot = parse_read_output(
            result.stdout, token, self.name, requests, self.scheduler.parse_query, self.heartbeats
        )
        self.last_parse_cpu_s = time.process_time() - cpu
        if not snapshot.query_ok:
            raise SnapshotError(
                f"{self.name}: scheduler query failed: {snapshot.query_error or result.stderr}"
            )
        self._swept = True
        return snapshot, allocs

    async def _verified(self, snapshot: ClusterSnapshot) -> ClaimVerdicts:
        """Reported checkpoints checked against storage (outside the store lock): the job's
        own folder of its current epoch, a manifest agreeing on job, epoch, seq and step.
        Claims that cannot advance the pointer anyway cost no storage request, and at most
        MAX_CLAIMS_PER_JOB per job and cycle are checked (newest first)."""
        from relaymd.daemon.claim_checks import verify_claims

        reported = [
            (event.job_id, event.checkpoint)
            for files in snapshot.files.values()
            for event in files.events
            if event.kind in (EventKind.CHECKPOINT, EventKind.COMPLETED)
            and event.checkpoint is not None
            and event.job_id
        ]
        jobs: dict[str, Job | None] = {}
        for job_id in {job_id for job_id, _ in reported}:
            jobs[job_id] = await self.ctx.store.get_job(job_id)
        verdicts = ClaimVerdicts()
        candidates: dict[str, dict[ClaimKey, CheckpointRef]] = {}
        for job_id, ref in reported:
            job = jobs[job_id]
            if job is None or ref is None:
                continue
            if job.prewritten_epoch and ref.epoch == job.prewritten_epoch:
                # A pre-written successor's first checkpoints may arrive in the cycle that
                # commits its epoch (ADR 0009): judge them as of that epoch; decide fences by
                # the epoch it commits.
                job = job.model_copy(update={"epoch": job.prewritten_epoch})
            key = claim_key(job.id, ref)
            reason = claim_shape_refusal(job, ref) or advance_refusal(job, ref)
            if reason is not None:
                verdicts.rejected[key] = reason
            else:
                candidates.setdefault(job.id, {})[key] = ref
        checks: list[tuple[ClaimKey, str, CheckpointRef]] = []
        for job_id, claims in candidates.items():
            newest_first = sorted(claims.items(), key=lambda kv: kv[1].seq, reverse=True)
            for n, (key, ref) in enumerate(newest_first):
                if n >= MAX_CLAIMS_PER_JOB:
                    verdicts.rejected[key] = "too many checkpoint reports in one cycle"
                    continue
                checks.append((key, job_id, ref))
        failures = await verify_claims(self.ctx.object_store, [(j, r) for _, j, r in checks])
        for (key, job_id, ref), exc in zip(checks, failures, strict=True):
            if exc is not None:
                log.warning(
                    "checkpoint_verify_failed", job_id=job_id, prefix=ref.prefix, error=str(exc)
                )
                verdicts.rejected[key] = f"verification failed: {exc}"[:500]
                continue
            verdicts.verified.add(key)
        return verdicts

    async def _load_jobs(self, allocs: list[Allocation]) -> dict[str, Job]:
        store = self.ctx.store
        jobs = {j.id: j for j in await store.list_jobs(states=JobState.active())}
        for alloc in allocs:
            if alloc.job_id and alloc.job_id not in jobs:
                job = await store.get_job(alloc.job_id)
                if job is not None:
                    jobs[job.id] = job
        for job_id in self.want_log.values():
            if job_id not in jobs:
                job = await store.get_job(job_id)
                if job is not None:
                    jobs[job.id] = job
        return jobs

    async def _decide_and_commit(
        self, snapshot: ClusterSnapshot, read_allocs: list[Allocation], submit_ok: bool
    ) -> tuple[CycleDecisions, list[Allocation]]:
        store = self.ctx.store
        verified = await self._verified(snapshot)
        # Read, decide and persist inside one write transaction: the CLI (operator requests,
        # submits) cannot change a row between our read and our write of it.
        async with self.ctx.store_lock, store.transaction():
            read_ids = {a.id for a in read_allocs}
            all_live = await store.list_allocations(states=LIVE_STATES)
            live_by_id = {a.id: a for a in all_live}
            allocs = []
            for alloc_id in read_ids:  # only the ended ones still owed a log tail are not live
                alloc = live_by_id.get(alloc_id) or await store.get_allocation(alloc_id)
                if alloc is not None:
                    allocs.append(alloc)
            jobs = await self._load_jobs(allocs)
            # Fresh switches: a disabled cluster's pending allocations stop counting as supply
            # elsewhere, and its own runner cancels them.
            statuses = await store.list_cluster_status()
            self.ctx.note_cluster_status(statuses)
            own = next((c for c in statuses if c.name == self.name), None)
            backoff = own.backoff if own is not None else {}
            cpu = time.process_time()
            decisions = decide_cycle(
                DecideInput(
                    now=utcnow(),
                    profile=self.profile,
                    profiles=self.ctx.profiles,
                    settings=self.ctx.settings,
                    mode=ClusterMode.of(switched_on=self._enabled(), submit_ok=submit_ok),
                    usable_clusters=self.ctx.usable_clusters(),
                    snapshot=snapshot,
                    allocations=allocs,
                    all_live=all_live,
                    jobs=jobs,
                    verified=verified.verified,
                    rejected_claims=verified.rejected,
                    submit_grace_s=self.profile.command_timeout_s + 15,
                    want_log={k: v for k, v in self.want_log.items() if k in read_ids},
                    vanished_since=self.vanished_since,
                    vanished_grace_s=max(30.0, 3 * self.profile.poll.min_interval_s),
                    daemon_started_at=self.ctx.started_at,
                    backoff=backoff,
                ),
                new_allocation_id,
            )
            self.last_decide_cpu_s = time.process_time() - cpu + self.last_parse_cpu_s
            await self._persist(decisions)
            if decisions.backoff != backoff:  # in the same transaction as the ends it counts
                await store.upsert_cluster_status(
                    (own or ClusterStatus(name=self.name)).model_copy(
                        update={"backoff": decisions.backoff}
                    )
                )
        for alloc_id in snapshot.files:
            if alloc_id in self.want_log and snapshot.files[alloc_id].log_tail is not None:
                self.want_log.pop(alloc_id)
        self.want_log.update(decisions.want_log)
        self.vanished_since = decisions.vanished_since
        merged = {a.id: a for a in allocs}
        merged.update(decisions.allocations)
        merged.update({a.id: a for a in decisions.new_allocations})
        self._jobs_after = {**jobs, **decisions.jobs}
        return decisions, list(merged.values())

    async def _persist(self, d: CycleDecisions) -> None:
        from relaymd.state import NotFoundError

        store = self.ctx.store
        for alloc in d.new_allocations:
            await store.insert_allocation(alloc)
        for alloc in d.allocations.values():
            await store.update_allocation(alloc)
        for job_id in d.bound:
            epoch = await store.next_epoch(job_id)
            job = d.jobs[job_id]
            if epoch != job.epoch:
                d.jobs[job_id] = job.model_copy(update={"epoch": epoch})
                for seg in d.new_segments:
                    if seg.job_id == job_id:
                        seg.epoch = epoch
        for job in d.jobs.values():
            await store.update_job(job)
        for close in d.closed_segments:
            try:
                async with store.transaction():  # a savepoint: a miss undoes only itself
                    await store.close_segment(
                        close.job_id,
                        close.epoch,
                        close.outcome,
                        close.end_step,
                        reason=close.reason,
                    )
            except NotFoundError:
                # A job bound before segments were recorded: the history has a gap, the
                # relay goes on.
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
            await self._record(
                audit.kind,
                audit.message,
                allocation_id=audit.allocation_id,
                job_id=audit.job_id,
                detail=audit.message,
            )

    def _worker_args(self, alloc: Allocation) -> list[str]:
        worker = self.ctx.worker
        return [
            "--alloc-dir",
            alloc_dir(self.profile.scratch, alloc.id),
            "--heartbeat-interval",
            f"{worker.heartbeat_interval_s:g}",
            "--idle-timeout",
            f"{worker.idle_timeout_s:g}",
            "--margin-min",
            f"{worker.handoff_margin_min_s:g}",
            "--margin-max",
            f"{worker.handoff_margin_max_s:g}",
        ]

    async def _write(
        self, d: CycleDecisions, allocs: list[Allocation], snapshot: ClusterSnapshot
    ) -> None:
        plan = WritePlan()
        jobs = self._jobs_after
        for alloc in d.new_allocations:
            folder = alloc_dir(self.profile.scratch, alloc.id)
            script = self.scheduler.render_job_script(alloc, self.profile, self._worker_args(alloc))
            plan.mkdirs.append(alloc.id)
            plan.files.append(credentials_file(alloc.id, self.ctx.access))
            plan.files.append(
                FileWrite(allocation_id=alloc.id, name=JOB_SCRIPT, data=script.encode(), mode=0o700)
            )
            plan.submits.append(
                SubmitCommand(
                    allocation_id=alloc.id,
                    snippet=self.scheduler.submit_snippet(alloc, f"{folder}/{JOB_SCRIPT}"),
                )
            )
        for alloc in allocs:
            if alloc.state is AllocationState.ENDED or alloc.state is AllocationState.SUBMITTING:
                continue
            files = snapshot.files.get(alloc.id)
            beat = files.heartbeat if files else None
            job = jobs.get(alloc.job_id or "")
            if alloc.stop_requested_at is not None:
                if control_needed(beat):
                    plan.files.append(control_file(alloc, job))
                continue
            successor = jobs.get(alloc.reserved_job_id or "")
            if successor is not None and successor_needed(alloc, beat):
                plan.files.append(successor_file(alloc, successor))
            elif withdrawal_needed(alloc, job, beat):
                plan.removals.append(FileRemoval(allocation_id=alloc.id, name=ASSIGNMENT_FILE))
            if (
                job is not None
                and job.allocation_id == alloc.id
                and job.state is JobState.ASSIGNED
                # A worker still waiting on its gate gets the committed, ungated assignment.
                and (
                    assignment_needed(job, beat)
                    or (beat is not None and beat.awaiting_handoff_of is not None)
                )
            ):
                plan.files.append(assignment_file(alloc, job))
        self._credentials_owed.update(
            a.id for a in d.allocations.values() if a.state is AllocationState.ENDED
        )
        plan.removals.extend(
            FileRemoval(allocation_id=alloc_id, name=CREDENTIALS_FILE)
            for alloc_id in sorted(self._credentials_owed)
        )
        if d.cancel:
            plan.cancel_snippet = self.scheduler.cancel_snippet(sorted(set(d.cancel.values())))
        if plan.empty:
            return
        script, token = build_write_script(self.profile.scratch, plan)
        if plan.submits:
            _maybe_crash("before_submit_write")
        # On a transport error unconfirmed submits stay `submitting`: the next read adopts
        # them by job name or drops them.
        result = await self._run(script)
        if plan.submits:
            _maybe_crash("after_submit_write")
        outcome = parse_write_output(result.stdout, token, plan, self.scheduler.parse_submit)
        if outcome.complete:
            self._credentials_owed.difference_update(
                r.allocation_id for r in plan.removals if r.name == CREDENTIALS_FILE
            )
        await self._record_submits(d.new_allocations, outcome)
        if outcome.failed_files or outcome.failed_dirs:
            log.warning(
                "mailbox_write_failed",
                cluster=self.name,
                files=outcome.failed_files,
                dirs=outcome.failed_dirs,
            )

    async def _record_submits(self, new: list[Allocation], outcome: Any) -> None:
        if not new:
            return
        store = self.ctx.store
        async with self.ctx.store_lock, store.transaction():
            for alloc in new:
                sub = outcome.submits.get(alloc.id)
                if sub is not None and sub.scheduler_id:
                    current = await store.get_allocation(alloc.id)
                    if current is not None and current.state is AllocationState.SUBMITTING:
                        await store.update_allocation(
                            current.model_copy(
                                update={
                                    "state": AllocationState.PENDING,
                                    "scheduler_id": sub.scheduler_id,
                                }
                            )
                        )
                    await self._record(
                        "allocation_submitted",
                        f"scheduler job {sub.scheduler_id}",
                        allocation_id=alloc.id,
                        scheduler_id=sub.scheduler_id,
                    )
                elif sub is not None or outcome.complete:
                    error = (sub.error if sub is not None else None) or "no submit result"
                    self._credentials_owed.add(alloc.id)  # written for a worker that never runs
                    await store.update_allocation(
                        alloc.model_copy(
                            update={
                                "state": AllocationState.ENDED,
                                "ended_at": utcnow(),
                                "end_reason": f"submit failed: {error}"[:500],
                            }
                        )
                    )
                    await self._record(
                        "allocation_submit_failed",
                        error[:500],
                        allocation_id=alloc.id,
                        warn=True,
                        error=error[:500],
                    )

    async def _record(
        self,
        kind: str,
        message: str,
        *,
        allocation_id: str | None,
        job_id: str | None = None,
        warn: bool = False,
        **log_fields: Any,
    ) -> None:
        """One audit row in the store and the matching log line."""
        await self.ctx.store.add_event(
            kind, message, job_id=job_id, allocation_id=allocation_id, cluster=self.name
        )
        if job_id is not None:
            log_fields["job_id"] = job_id
        (log.warning if warn else log.info)(
            kind, cluster=self.name, allocation_id=allocation_id, **log_fields
        )

    async def _retention(self, job_ids: list[str]) -> None:
        from relaymd.daemon.retention import apply_retention

        for job_id in set(job_ids):
            job = await self.ctx.store.get_job(job_id)
            if job is None or job.checkpoint is None:
                continue
            try:
                deleted = await asyncio.to_thread(apply_retention, self.ctx.object_store, job)
            except Exception as exc:  # retention is housekeeping: never fail a cycle on it
                log.warning("retention_failed", job_id=job_id, error=str(exc))
                continue
            if deleted:
                log.info("checkpoints_pruned", job_id=job_id, deleted=len(deleted))

    # -- cluster status ----------------------------------------------------------------
    async def _status_ok(self, enabled: bool, started: datetime, live: list[Allocation]) -> None:
        async with self.ctx.store_lock:
            await self._upsert_ok(enabled, started, live)

    async def _upsert_ok(self, enabled: bool, started: datetime, live: list[Allocation]) -> None:
        # The operator may have flipped the switch during the cycle: keep their value.
        current = await self.ctx.store.get_cluster_status(self.name)
        enabled = current.enabled if current is not None else enabled
        await self.ctx.store.upsert_cluster_status(
            ClusterStatus(
                name=self.name,
                enabled=enabled,
                reachability=ClusterReachability.REACHABLE
                if enabled
                else ClusterReachability.DISABLED,
                last_poll_at=started,
                last_ok_at=utcnow(),
                last_error=self.config_error,
                poll_interval_s=self.interval,
                pending=sum(
                    a.state in (AllocationState.PENDING, AllocationState.SUBMITTING) for a in live
                ),
                running=sum(a.state is AllocationState.RUNNING for a in live),
                backoff=current.backoff if current is not None else {},
            )
        )

    async def _failed(
        self, reachability: ClusterReachability, exc: Exception, started: datetime
    ) -> None:
        self.ctx.reachability[self.name] = reachability
        if self._failure_log.due(f"{reachability} {type(exc).__name__}", time.monotonic()):
            log.warning(
                "cluster_poll_failed",
                cluster=self.name,
                reachability=str(reachability),
                error=str(exc),
            )
        update = {
            "name": self.name,
            "enabled": self._enabled(),
            "reachability": reachability,
            "last_poll_at": started,
            "last_error": str(exc)[:500],
            "poll_interval_s": self.interval,
        }
        async with self.ctx.store_lock:
            current = await self.ctx.store.get_cluster_status(self.name)
            if current is not None:
                update["enabled"] = current.enabled
                new = current.model_copy(update=update)
            else:
                new = ClusterStatus.model_validate(update)
            await self.ctx.store.upsert_cluster_status(new)


class ClaimVerdicts(BaseModel):
    verified: set[ClaimKey] = Field(default_factory=set)
    rejected: dict[ClaimKey, str] = Field(default_factory=dict)


def failure_reachability(exc: Exception) -> ClusterReachability:
    """How a failed poll shows in `clusters list`/`status`: each state has its own advice."""
    from relaymd.transport import HostKeyChanged, HostKeyRejected, NeedsAuth

    if isinstance(exc, HostKeyChanged):
        return ClusterReachability.HOST_KEY_CHANGED
    if isinstance(exc, NeedsAuth | HostKeyRejected):
        return ClusterReachability.NEEDS_AUTH
    return ClusterReachability.UNREACHABLE


class RepeatedWarning:
    """Log a failure when it changes, then only every `every_s` while it stays the same: a
    cluster down for hours must not write the same warning every poll."""

    def __init__(self, every_s: float = 600.0) -> None:
        self.every_s = every_s
        self._last: tuple[str, float] | None = None

    def due(self, message: str, now: float) -> bool:
        last = self._last
        if last is not None and last[0] == message and now - last[1] < self.every_s:
            return False
        self._last = (message, now)
        return True

    def reset(self) -> None:
        self._last = None


class SnapshotError(Exception):
    """The batched read ran but the scheduler query inside it failed."""
