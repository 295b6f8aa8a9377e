"""A `storage` cluster (ADR 0022): workers a person started on machines with outbound HTTPS
(`relaymd-worker --mailbox s3://<bucket>/<prefix>/mailbox/<name>`), reached through the job
bucket only.

It stands where the scratch carrier stands in the cycle (same `read`/`write` as
relaymd.mailbox.scratch.ScratchCarrier), and plays the scheduler from what the bucket shows:
- a mailbox with a heartbeat that the state store has never seen is adopted as a RUNNING
  allocation of this cluster (its end from the heartbeat's deadline, else the partition's
  walltime) and gets its credentials; an id seen before, even ended, is never adopted twice;
- an allocation is running while its heartbeat object keeps changing; it has ended once the
  worker says it is exiting, or once the object is gone, or has not changed for
  `stale_after_s + stop_grace_s` on the daemon's clock (the daemon's own liveness rule has
  already requeued its job by then), or, with a provider that lists its machines (Salad,
  ADR 0025), once the machine its heartbeat names is absent from that list: a listing can end
  an allocation early, never keep one alive;
- a cancel asks the worker to stop (control.json): there is nothing else to cancel.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from relaymd.daemon.audit import record_event
from relaymd.daemon.context import DaemonContext
from relaymd.daemon.poll_outcome import SnapshotError
from relaymd.logging import get_logger
from relaymd.mailbox.carrier import ClusterSnapshot, FileWrite, MailboxWrites, ReadRequest
from relaymd.mailbox.daemon_files import credentials_file
from relaymd.mailbox.layout import CONTROL_FILE, HEARTBEAT_FILE, storage_mailbox_key
from relaymd.mailbox.models import (
    HEARTBEAT_MAX_BYTES,
    Control,
    ControlAction,
    Heartbeat,
    WorkerState,
)
from relaymd.mailbox.reading import HeartbeatMemo, parse_heartbeat
from relaymd.mailbox.scratch import SchedulerQuery
from relaymd.mailbox.scratch_write import WritePlan, WriteResult
from relaymd.mailbox.storage_carrier import StorageCarrier
from relaymd.models import Allocation, AllocationState, ClusterProfile, utcnow
from relaymd.models.cluster import NAME_PATTERN
from relaymd.scheduler.base import EndState, SchedulerJob, SchedulerPhase
from relaymd.scheduler.storage import cancelled_ids
from relaymd.storage import ObjectNotFound, StorageError

log = get_logger(__name__)
DEFAULT_IMAGE = "openmm"
# The machine ids a provider lists for this cluster now (any state), or None when it cannot
# tell (no provider, or its API failed): no evidence, the heartbeat alone decides.
MachineLister = Callable[[], Awaitable[frozenset[str] | None]]


def machine_gone(beat: Heartbeat | None, machines: frozenset[str] | None) -> bool:
    """The provider no longer lists the machine this heartbeat names. A heartbeat naming no
    machine, or no listing, is no evidence either way."""
    if machines is None or beat is None or beat.machine_id is None:
        return False
    return beat.machine_id not in machines


class StorageClusterCarrier:
    def __init__(
        self,
        ctx: DaemonContext,
        profile: ClusterProfile,
        memo: HeartbeatMemo,
        machines: MachineLister | None = None,
    ) -> None:
        self.ctx, self.profile, self.memo, self.machines = ctx, profile, memo, machines
        self.carrier = StorageCarrier(ctx.object_store, memo, profile.name)
        self.last_parse_cpu_s = 0.0
        # allocation id -> (heartbeat ETag, the daemon's time it was first seen)
        self._changed: dict[str, tuple[str, datetime]] = {}

    async def read(
        self,
        requests: Sequence[ReadRequest],
        *,
        sweep_keep: Sequence[str] | None = None,
        query: SchedulerQuery | None = None,
    ) -> ClusterSnapshot:
        """The mailboxes (one LIST, GETs for news), newcomers adopted, and the scheduler's view
        of each requested allocation derived from its heartbeat object."""
        asked = [r.allocation_id for r in requests]
        # Listed before the mailboxes are read: every asked allocation was adopted in an
        # earlier cycle, so its machine existed before this listing was taken.
        machines = await self.machines() if self.machines is not None else None
        try:
            read = await self.carrier.read(requests, sweep_keep=sweep_keep)
            await self._adopt(sorted(set(read.heartbeat_ids) - set(asked)))
        except StorageError as exc:
            # The bucket is this cluster's login node: unreachable is a failed poll, retried.
            raise SnapshotError(f"{self.profile.name}: cannot read the mailboxes: {exc}") from exc
        now, listed = utcnow(), set(read.heartbeat_ids)
        kept = set(asked)
        self._changed = {a: seen for a, seen in self._changed.items() if a in kept}
        jobs: dict[str, Any] = {}
        for alloc_id in asked:
            beat = read.files[alloc_id].heartbeat
            gone = machine_gone(beat, machines)
            jobs[alloc_id] = self._view(alloc_id, alloc_id in listed, beat, now, gone)
        return ClusterSnapshot(
            cluster=self.profile.name, query_ok=True, files=read.files, scheduler_jobs=jobs
        )

    def _view(
        self, alloc_id: str, listed: bool, beat: Heartbeat | None, now: datetime, gone: bool
    ) -> SchedulerJob:
        etag = self.memo.fingerprint(alloc_id) if listed else ""
        seen = self._changed.get(alloc_id)
        if seen is None or seen[0] != etag:
            seen = self._changed[alloc_id] = (etag, now)
        settings = self.ctx.settings
        frozen = (now - seen[1]).total_seconds() > settings.stale_after_s + settings.stop_grace_s
        exiting = beat is not None and beat.state is WorkerState.EXITING
        if gone:
            log.info("provider_machine_gone", cluster=self.profile.name, allocation=alloc_id)
        ended = not listed or frozen or exiting or gone
        phase = SchedulerPhase.ENDED if ended else SchedulerPhase.RUNNING
        end = None
        if phase is SchedulerPhase.ENDED:
            end = EndState.COMPLETED if exiting else EndState.NODE_FAIL
        return SchedulerJob(
            allocation_id=alloc_id,
            scheduler_id=alloc_id,
            phase=phase,
            raw_state=str(end or "RUNNING"),
            end_state=end,
            node=beat.hostname if beat else None,
        )

    async def _adopt(self, alloc_ids: Iterable[str]) -> None:
        store = self.ctx.store
        for alloc_id in alloc_ids:
            if not re.fullmatch(NAME_PATTERN, alloc_id):
                continue  # not a name this daemon would use: left alone
            if await store.get_allocation(alloc_id) is not None:
                continue  # known, or ended: a mailbox is adopted once
            key = storage_mailbox_key(alloc_id, HEARTBEAT_FILE)
            try:
                # One byte past the cap: a larger object is refused without downloading it.
                data = await asyncio.to_thread(
                    self.ctx.object_store.get_range, key, 0, HEARTBEAT_MAX_BYTES + 1
                )
            except ObjectNotFound:
                continue
            beat = parse_heartbeat(data)
            if beat is None or beat.allocation_id != alloc_id or beat.job_id is not None:
                continue  # garbled, foreign or busy: no news
            alloc = self._allocation(alloc_id, beat)
            if alloc is None:
                continue
            async with self.ctx.store_lock:
                await store.insert_allocation(alloc)
            await self.carrier.write(
                MailboxWrites(files=[credentials_file(alloc_id, self.ctx.access)])
            )
            await record_event(
                store,
                self.profile.name,
                "allocation_joined",
                f"worker on {beat.hostname or '?'} joined through the bucket",
                allocation_id=alloc_id,
            )

    def _allocation(self, alloc_id: str, beat: Heartbeat) -> Allocation | None:
        now = utcnow()
        partition = self.profile.partitions[0]
        walltime_s = int(partition.walltime_minutes * 60)
        if beat.deadline is not None:
            walltime_s = int((beat.deadline - now).total_seconds())
        if walltime_s <= 0:
            return None  # its end has passed already
        return Allocation(
            id=alloc_id,
            cluster=self.profile.name,
            partition=partition.name,
            image=next(iter(self.profile.images), DEFAULT_IMAGE),
            state=AllocationState.RUNNING,
            scheduler_id=alloc_id,
            walltime_s=walltime_s,
            gpus=beat.gpus,
            submitted_at=now,
            started_at=now,
        )

    async def write(
        self,
        writes: MailboxWrites,
        *,
        parse_submit: Callable[[str], Iterable[Any]] | None = None,
    ) -> WriteResult:
        """Files and removals as PUTs and DELETEs; a cancel becomes a stop request."""
        plan = writes if isinstance(writes, WritePlan) else WritePlan(**dict(writes))
        stop = Control(action=ControlAction.STOP).model_dump_json().encode()
        files = list(plan.files) + [
            FileWrite(allocation_id=alloc_id, name=CONTROL_FILE, data=stop)
            for alloc_id in cancelled_ids(plan.cancel_snippet)
        ]
        written = await self.carrier.write(MailboxWrites(files=files, removals=plan.removals))
        return WriteResult(
            complete=written.complete,
            failed_files=written.failed_files,
            cancel_rc=0 if plan.cancel_snippet else None,
        )
