"""Builders and a front-end-neutral way to call the state store, for the test_state_* files.

`call(store.method(...))` awaits the async front-end and passes the sync one through, so each
behaviour is written once and checked against both front-ends.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from relaymd.models import (
    Allocation,
    AllocationState,
    Job,
    JobSpec,
    JobState,
    ObjectRef,
    OpenMMSettings,
    Segment,
)
from relaymd.state import AsyncStateStore, StateStore

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SHA = "a" * 64

Store = StateStore | AsyncStateStore


async def call(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@asynccontextmanager
async def open_front_end(kind: str, path: Path) -> AsyncIterator[Store]:
    """The state file at `path` through the "sync" or the "async" front-end."""
    if kind == "sync":
        with StateStore.open(path) as sync_store:
            yield sync_store
    else:
        async with await AsyncStateStore.open(path) as async_store:
            yield async_store


async def advance_epoch(store: Store, job_id: str) -> int:
    """Move the job's fencing token on by one as the daemon persists a decision (a
    compare-and-set on the epoch it read); returns the new epoch."""
    job = await call(store.get_job(job_id))
    advanced = job.model_copy(update={"epoch": job.epoch + 1})
    stored = await call(store.update_job_at_epoch(advanced, job.epoch))
    return int(stored.epoch)


@asynccontextmanager
async def transaction(store: Store) -> AsyncIterator[None]:
    if isinstance(store, StateStore):
        with store.transaction():
            yield
    else:
        async with store.transaction():
            yield


def make_job(
    job_id: str,
    *,
    state: JobState = JobState.QUEUED,
    priority: int = 0,
    created_s: float = 0.0,
    ns_per_day: float | None = None,
) -> Job:
    return Job(
        id=job_id,
        spec=JobSpec(
            title=f"title {job_id}", engine=OpenMMSettings(total_steps=1000), priority=priority
        ),
        state=state,
        bundle=ObjectRef(key=f"jobs/{job_id}/input/bundle.tar.gz", sha256=SHA, size=10),
        ns_per_day=ns_per_day,
        created_at=T0 + timedelta(seconds=created_s),
        updated_at=T0 + timedelta(seconds=created_s),
    )


def make_allocation(
    allocation_id: str,
    *,
    cluster: str = "clusterA",
    state: AllocationState = AllocationState.PENDING,
    submitted_s: float = 0.0,
) -> Allocation:
    return Allocation(
        id=allocation_id,
        cluster=cluster,
        partition="gpu",
        image="openmm",
        state=state,
        walltime_s=4 * 3600,
        submitted_at=T0 + timedelta(seconds=submitted_s),
    )


def make_segment(job_id: str, epoch: int, *, allocation_id: str = "a1") -> Segment:
    return Segment(
        job_id=job_id,
        epoch=epoch,
        allocation_id=allocation_id,
        cluster="clusterA",
        start_step=100 * (epoch - 1),
        started_at=T0 + timedelta(hours=epoch),
    )
