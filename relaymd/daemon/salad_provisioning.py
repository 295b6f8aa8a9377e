"""Each cycle of a `salad` cluster (ADR 0025): make the container group exist with the
wanted container, and set its replica count from demand (relaymd.providers.salad.demand).

The replicas are ordinary storage-cluster workers: they join through the bucket and the
storage carrier adopts them (ADR 0022). A failed API call is logged and retried next cycle;
it never fails the cycle (the workers already running keep being watched)."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from relaymd.daemon.audit import record_event
from relaymd.daemon.context import DaemonContext
from relaymd.logging import get_logger
from relaymd.models import AllocationState, ClusterProfile, JobState, utcnow
from relaymd.providers.salad.api_models import (
    ContainerGroup,
    GroupCreation,
    GroupPatch,
    GroupStatus,
)
from relaymd.providers.salad.client import SaladClient, SaladError, error_text
from relaymd.providers.salad.demand import (
    Demand,
    ReplicaPlan,
    WaitingJob,
    day_start,
    plan_replicas,
    replica_hours_today,
)
from relaymd.providers.salad.spec import container

log = get_logger(__name__)
DEFAULT_IMAGE = "openmm"
HPC_SCHEDULERS = ("slurm", "direct")


def salad_image(profile: ClusterProfile) -> str:
    """The image profile a Salad replica runs (as the storage carrier adopts it)."""
    return next(iter(profile.images), DEFAULT_IMAGE)


def other_images(ctx: DaemonContext, profile: ClusterProfile) -> set[str]:
    """What the switched-on HPC clusters can run (a native worker runs every image)."""
    images: set[str] = set()
    for other in ctx.profiles.values():
        if other.name == profile.name or other.scheduler not in HPC_SCHEDULERS:
            continue
        if not ctx.switched_on(other):
            continue
        images |= set(other.images) or {DEFAULT_IMAGE}
        if other.native_worker is not None:
            images.add("*")
    return images


class SaladProvisioner:
    def __init__(self, ctx: DaemonContext, profile: ClusterProfile, api_key: SecretStr) -> None:
        assert profile.salad is not None
        self.ctx, self.profile, self.settings = ctx, profile, profile.salad
        self.client = SaladClient(profile.salad, api_key)
        self.last_plan: ReplicaPlan | None = None
        self.last_error: str | None = None

    async def demand(self, current: int) -> Demand:
        store, now = self.ctx.store, utcnow()
        queued = await store.list_jobs(states=[JobState.QUEUED])
        allocs = await store.list_allocations(cluster=self.profile.name)
        image = salad_image(self.profile)
        others = other_images(self.ctx, self.profile)
        if "*" in others:
            others.add(image)
        since = day_start(now)
        spans = [
            (a.started_at, a.ended_at)
            for a in allocs
            if a.started_at is not None and (a.ended_at is None or a.ended_at > since)
        ]
        live = [a for a in allocs if a.state is not AllocationState.ENDED]
        return Demand(
            now=now,
            image=image,
            waiting=[
                WaitingJob(job_id=j.id, image=j.spec.image, waiting_since=j.updated_at)
                for j in queued
            ],
            other_images=others,
            busy=sum(1 for a in live if a.job_id is not None),
            current=current,
            used_replica_hours=replica_hours_today(spans, now),
        )

    async def machines(self) -> frozenset[str] | None:
        """The machine ids of the group's instances in any state (creating, running,
        stopping...), for the storage cluster's liveness cross-check; None when the API could
        not say (a failure is no evidence: the heartbeat alone decides)."""
        try:
            listing = await asyncio.to_thread(self.client.list_instances)
        except SaladError as exc:
            if exc.status != 404:  # 404: no group yet, so no replica of ours to judge
                log.warning(
                    "salad_instances_failed", cluster=self.profile.name, error=error_text(exc)
                )
            return None
        return frozenset(i.machine_id for i in listing.instances)

    async def provision(self) -> ReplicaPlan | None:
        """One pass; None when the API could not be reached (logged, retried next cycle)."""
        try:
            plan = await self._provision()
        except SaladError as exc:
            text = error_text(exc)
            log.warning("salad_api_failed", cluster=self.profile.name, error=text)
            if text != self.last_error:  # once per distinct failure, for `relaymd status`
                await self._note("salad_api_failed", text, warn=True)
            self.last_error = text
            return None
        self.last_error = None
        return plan

    async def _provision(self) -> ReplicaPlan:
        group = await asyncio.to_thread(self.client.get_group)
        plan = plan_replicas(await self.demand(group.replicas if group else 0), self.settings)
        wanted = container(self.settings, self.ctx.access)
        if group is None:
            creation = GroupCreation(
                name=self.settings.container_group, container=wanted, replicas=plan.replicas
            )
            group = await asyncio.to_thread(self.client.create_group, creation)
            await self._note("salad_group_created", f"container group created ({plan.why})")
        patch = GroupPatch(
            container=wanted if group.container != wanted else None,
            replicas=plan.replicas if group.replicas != plan.replicas else None,
        )
        if patch.container is not None or patch.replicas is not None:
            group = await asyncio.to_thread(self.client.patch_group, patch)
        await self._run_state(group, plan)
        if self.last_plan is None or self.last_plan.replicas != plan.replicas:
            await self._note(
                "salad_scaled",
                f"replicas {plan.replicas} ({plan.why}; {len(plan.for_jobs)} job(s) for Salad)",
            )
        self.last_plan = plan
        return plan

    async def _run_state(self, group: ContainerGroup, plan: ReplicaPlan) -> None:
        stopped = group.current_state.status in (GroupStatus.STOPPED, GroupStatus.SUCCEEDED)
        if plan.replicas > 0 and stopped:
            await asyncio.to_thread(self.client.start)
        elif plan.replicas == 0 and not stopped:
            await asyncio.to_thread(self.client.stop)  # nothing billed while idle

    async def _note(self, kind: str, message: str, *, warn: bool = False) -> None:
        await record_event(
            self.ctx.store, self.profile.name, kind, message, allocation_id=None, warn=warn
        )


def salad_provisioner(ctx: DaemonContext, profile: ClusterProfile) -> SaladProvisioner | None:
    """The provisioner of a `salad` cluster whose API key was read at start, else None."""
    key = ctx.salad_keys.get(profile.name)
    if profile.scheduler != "salad" or profile.salad is None or key is None:
        return None
    return SaladProvisioner(ctx, profile, key)
