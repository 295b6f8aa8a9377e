"""One cluster's reconcile cycle: read -> decide -> commit -> write -> commit results.

At most two round trips per cycle (invariant 6). Decisions are committed BEFORE the write that
acts on them (invariant 4: a `submitting` row exists before sbatch runs; an epoch is committed
before the assignment that carries it), and everything written is derived from committed rows,
so a crash anywhere is repaired by the next cycle. The steps live in their own modules
(`read_step`, `commit`, `write_step`); a poll's outcome is recorded in one place
(`poll_outcome`); what one cycle hands the next is a `CarriedState`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from relaymd.daemon.carried import CarriedState
from relaymd.daemon.claim_checks import verify_reported
from relaymd.daemon.commit import Committed, decide_and_commit, flush_news
from relaymd.daemon.context import DaemonContext
from relaymd.daemon.poll_outcome import PollOutcome, poll_failures
from relaymd.daemon.read_step import read_cluster
from relaymd.daemon.retention import prune_checkpoints
from relaymd.daemon.salad_provisioning import salad_provisioner
from relaymd.daemon.scope import CycleScope
from relaymd.daemon.seams import ClusterTransport, TransportFactory
from relaymd.daemon.storage_cluster import StorageClusterCarrier
from relaymd.daemon.write_step import write_cluster
from relaymd.mailbox.scratch import ScratchCarrier
from relaymd.models import AllocationState, ClusterProfile, utcnow
from relaymd.scheduler.job_script import profile_problem
from relaymd.scheduler.port import SchedulerPort
from relaymd.scheduler.storage import StorageScheduler

if TYPE_CHECKING:
    from relaymd.transport.base import CommandResult


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
        transport_factory: TransportFactory | None = None,
        scheduler: SchedulerPort | None = None,
    ) -> None:
        self.ctx = ctx
        self.profile = profile
        self.interactive = interactive
        if transport_factory is None:
            from relaymd.transport import make_transport

            transport_factory = make_transport
        storage = profile.scheduler in (
            "storage",
            "salad",
        )  # workers join through the bucket (ADR 0022)
        if scheduler is None:
            from relaymd.scheduler import make_scheduler

            scheduler = StorageScheduler() if storage else make_scheduler(profile)
        self._transport_factory = transport_factory
        self.transport: ClusterTransport | None = None
        self.scheduler = scheduler
        self.carried = CarriedState()
        self.salad = salad_provisioner(ctx, profile)  # None but for `salad` (ADR 0025)
        machines = self.salad.machines if self.salad is not None else None
        carrier: ScratchCarrier | StorageClusterCarrier = (
            StorageClusterCarrier(ctx, profile, self.carried.heartbeats, machines)
            if storage
            else ScratchCarrier(profile.scratch, self._run, self.carried.heartbeats, profile.name)
        )
        self.scope = CycleScope(ctx, profile, scheduler, self.carried, self._run, carrier)
        self.outcome = PollOutcome(ctx, profile)
        self.interval = profile.poll.min_interval_s  # paced by the loop
        self.cycles = 0
        # A profile value that cannot go into a script safely stops submissions on this
        # cluster (with the reason in its status) instead of failing every cycle.
        self.config_error = profile_problem(scheduler, profile, ctx.worker)

    @property
    def name(self) -> str:
        return self.profile.name

    async def stop(self) -> None:
        """The daemon is stopping: write the heartbeat news held in memory, then close."""
        try:
            async with self.ctx.store_lock:
                await flush_news(self.ctx.store, self.carried.news)
        finally:
            await self.close()

    async def close(self) -> None:
        if self.transport is not None:
            transport, self.transport = self.transport, None
            await transport.close()

    async def _run(self, script: str) -> CommandResult:
        if self.transport is None:
            self.transport = self._transport_factory(self.profile, interactive=self.interactive)
        return await self.transport.run(script, timeout=self.profile.command_timeout_s)

    def _round_trips(self) -> int:
        return self.transport.round_trips if self.transport is not None else 0

    async def cycle(self) -> CycleReport:
        started = utcnow()
        report = CycleReport(cluster=self.name, ok=False)
        trips_before = self._round_trips()
        try:
            committed = await self._steps()
        except poll_failures() as exc:
            await self.outcome.failed(exc, started, interval_s=self.interval)
            report.error = str(exc)
            await self.close()
            return report
        finally:
            report.round_trips = self._round_trips() - trips_before
        decisions = committed.decisions
        live = [a for a in committed.allocations if a.state is not AllocationState.ENDED]
        report.ok = True
        report.changed = decisions.changed
        report.decide_cpu_s = committed.decide_cpu_s
        report.busy = bool(live)
        await self.outcome.succeeded(
            started, live, interval_s=self.interval, config_error=self.config_error
        )
        if decisions.checkpointed:
            await prune_checkpoints(self.ctx.store, self.ctx.object_store, decisions.checkpointed)
        return report

    async def _steps(self) -> Committed:
        """Read, check claims in storage, decide and commit, write."""
        read = await read_cluster(self.scope)
        verdicts = await verify_reported(self.ctx.store, self.ctx.object_store, read.snapshot)
        # A misconfigured profile keeps watching what exists but submits nothing.
        submit_ok = self.config_error is None and self.profile.scheduler not in ("storage", "salad")
        committed = await decide_and_commit(self.scope, read, submit_ok, verdicts)
        await write_cluster(self.scope, committed, read.snapshot)
        if self.salad is not None:
            await self.salad.provision()
        return committed
