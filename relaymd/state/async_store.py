"""The state store for the daemon: aiosqlite, one connection shared by the daemon's tasks.

Same method names and arguments as `StateStore`, awaited; every method is a one-line call of
the operation in `relaymd.state.queries`, and this class only executes what it yields.

Tasks share one connection, so one lock serializes operations; a task inside `transaction()`
(and tasks it starts there, which inherit its context) joins that transaction instead of
waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import aiosqlite

from relaymd.models import (
    Allocation,
    AllocationState,
    AuditEvent,
    ClusterStatus,
    DaemonStatus,
    Job,
    JobState,
    Segment,
    SegmentOutcome,
    StatusSummary,
)
from relaymd.state import files
from relaymd.state import queries as q
from relaymd.state.plan import (
    BEGIN_WRITE,
    COMMIT,
    ROLLBACK,
    Plan,
    Result,
    Statement,
    Steps,
    in_transaction,
    release,
    rollback_to,
    savepoint,
)

T = TypeVar("T")

# ids of the stores whose transaction the current context holds.
_HELD: ContextVar[frozenset[int]] = ContextVar("relaymd_state_transactions", default=frozenset())


class AsyncStateStore:
    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._conn = connection
        self.path = path
        self._lock = asyncio.Lock()
        self._depth = 0

    @classmethod
    async def open(cls, path: Path | None = None) -> AsyncStateStore:
        target = await asyncio.to_thread(files.prepare, path)
        # isolation_level=None: the operations issue BEGIN/COMMIT themselves.
        conn = await aiosqlite.connect(target, timeout=q.BUSY_TIMEOUT_S, isolation_level=None)
        store = cls(conn, target)
        try:
            await store._run(q.open_connection(target))
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> AsyncStateStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- executor ------------------------------------------------------------------------

    async def _execute(self, statement: Statement) -> Result:
        async with self._conn.execute(statement.sql, statement.params) as cursor:
            rows = await cursor.fetchall()
            return Result([tuple(r) for r in rows], cursor.rowcount, cursor.lastrowid)

    async def _drive(self, steps: Steps[T]) -> T:
        try:
            statement = next(steps)
            while True:
                try:
                    result = await self._execute(statement)
                except BaseException as exc:  # let the operation roll back, then re-raise
                    statement = steps.throw(exc)
                else:
                    statement = steps.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value

    def _holds_transaction(self) -> bool:
        return id(self) in _HELD.get()

    async def _run(self, plan: Plan[T]) -> T:
        if self._holds_transaction():
            return await self._drive(plan.steps)
        async with self._lock:
            return await self._drive(in_transaction(plan))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Group writes atomically; store methods called inside join it. Nested blocks are
        savepoints, so an inner failure that is caught undoes only the inner writes."""
        if self._holds_transaction():
            depth = self._depth
            await self._execute(Statement(savepoint(depth)))
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth = depth
                await self._execute(Statement(rollback_to(depth)))
                await self._execute(Statement(release(depth)))
                raise
            self._depth = depth
            await self._execute(Statement(release(depth)))
            return
        async with self._lock:
            await self._execute(Statement(BEGIN_WRITE))
            token = _HELD.set(_HELD.get() | {id(self)})
            self._depth = 1
            try:
                yield
                await self._execute(Statement(COMMIT))
            except BaseException:
                if self._conn.in_transaction:
                    with suppress(Exception):  # keep the original error
                        await self._execute(Statement(ROLLBACK))
                raise
            finally:
                _HELD.reset(token)
                self._depth = 0

    # --- jobs ----------------------------------------------------------------------------

    async def insert_job(self, job: Job) -> None:
        return await self._run(q.insert_job(job))

    async def get_job(self, job_id: str) -> Job | None:
        return await self._run(q.get_job(job_id))

    async def list_jobs(
        self,
        states: Sequence[JobState] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Job]:
        return await self._run(q.list_jobs(states, limit, offset))

    async def update_job(self, job: Job, *, expected_updated_at: datetime | None = None) -> Job:
        return await self._run(q.update_job(job, expected_updated_at))

    async def update_job_at_epoch(self, job: Job, *, expected_epoch: int) -> Job:
        return await self._run(q.update_job_at_epoch(job, expected_epoch))

    async def count_jobs_by_state(self) -> dict[JobState, int]:
        return await self._run(q.count_jobs_by_state())

    async def next_epoch(self, job_id: str) -> int:
        return await self._run(q.next_epoch(job_id))

    async def find_job_by_prefix(self, prefix: str, limit: int | None = None) -> list[Job]:
        return await self._run(q.find_job_by_prefix(prefix, limit))

    # --- allocations ---------------------------------------------------------------------

    async def insert_allocation(self, allocation: Allocation) -> None:
        return await self._run(q.insert_allocation(allocation))

    async def get_allocation(self, allocation_id: str) -> Allocation | None:
        return await self._run(q.get_allocation(allocation_id))

    async def list_allocations(
        self, cluster: str | None = None, states: Sequence[AllocationState] | None = None
    ) -> list[Allocation]:
        return await self._run(q.list_allocations(cluster, states))

    async def update_allocation(self, allocation: Allocation) -> None:
        return await self._run(q.update_allocation(allocation))

    # --- segments ------------------------------------------------------------------------

    async def insert_segment(self, segment: Segment) -> None:
        return await self._run(q.insert_segment(segment))

    async def close_segment(
        self,
        job_id: str,
        epoch: int,
        outcome: SegmentOutcome,
        end_step: int | None,
        reason: str | None = None,
    ) -> Segment:
        return await self._run(q.close_segment(job_id, epoch, outcome, end_step, reason))

    async def record_segment_times(
        self,
        job_id: str,
        epoch: int,
        noticed_at: datetime,
        worker_started_at: datetime | None = None,
        worker_ended_at: datetime | None = None,
    ) -> Segment:
        return await self._run(
            q.record_segment_times(job_id, epoch, noticed_at, worker_started_at, worker_ended_at)
        )

    async def list_segments(self, job_id: str) -> list[Segment]:
        return await self._run(q.list_segments(job_id))

    async def list_segments_on(self, allocation_ids: Sequence[str] | None = None) -> list[Segment]:
        return await self._run(q.list_segments_on(allocation_ids))

    # --- audit ---------------------------------------------------------------------------

    async def add_event(
        self,
        kind: str,
        message: str,
        *,
        job_id: str | None = None,
        allocation_id: str | None = None,
        cluster: str | None = None,
    ) -> AuditEvent:
        return await self._run(
            q.add_event(kind, message, job_id=job_id, allocation_id=allocation_id, cluster=cluster)
        )

    async def list_events(self, job_id: str | None = None, limit: int = 50) -> list[AuditEvent]:
        return await self._run(q.list_events(job_id, limit))

    # --- clusters and daemon -------------------------------------------------------------

    async def upsert_cluster_status(self, status: ClusterStatus) -> ClusterStatus:
        return await self._run(q.upsert_cluster_status(status))

    async def get_cluster_status(self, name: str) -> ClusterStatus | None:
        return await self._run(q.get_cluster_status(name))

    async def list_cluster_status(self) -> list[ClusterStatus]:
        return await self._run(q.list_cluster_status())

    async def set_cluster_enabled(self, name: str, enabled: bool) -> ClusterStatus:
        return await self._run(q.set_cluster_enabled(name, enabled))

    async def set_daemon_status(self, status: DaemonStatus) -> None:
        return await self._run(q.set_daemon_status(status))

    async def get_daemon_status(self) -> DaemonStatus | None:
        return await self._run(q.get_daemon_status())

    # --- relaymd status ------------------------------------------------------------------

    async def status_summary(self) -> StatusSummary:
        return await self._run(q.status_summary())

    async def schema_version(self) -> int:
        return await self._run(q.schema_version())
