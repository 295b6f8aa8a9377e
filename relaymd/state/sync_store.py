"""The state store for the CLI and tests: stdlib sqlite3, one connection, one thread.

Every method is a one-line call of the operation of the same name in `relaymd.state.queries`;
this class only executes the statements it yields.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

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


class StateStore:
    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._conn = connection
        self.path = path
        self._depth = 0  # nesting of transaction(); > 0 means operations join it

    @classmethod
    def open(cls, path: Path | None = None) -> StateStore:
        target = files.prepare(path)
        # isolation_level=None: the operations issue BEGIN/COMMIT themselves.
        conn = sqlite3.connect(target, timeout=q.BUSY_TIMEOUT_S, isolation_level=None)
        store = cls(conn, target)
        try:
            store._run(q.open_connection(target))
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- executor ------------------------------------------------------------------------

    def _execute(self, statement: Statement) -> Result:
        cursor = self._conn.execute(statement.sql, statement.params)
        try:
            return Result(cursor.fetchall(), cursor.rowcount, cursor.lastrowid)
        finally:
            cursor.close()

    def _drive(self, steps: Steps[T]) -> T:
        try:
            statement = next(steps)
            while True:
                try:
                    result = self._execute(statement)
                except BaseException as exc:  # let the operation roll back, then re-raise
                    statement = steps.throw(exc)
                else:
                    statement = steps.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value

    def _run(self, plan: Plan[T]) -> T:
        return self._drive(plan.steps if self._depth else in_transaction(plan))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes atomically; store methods called inside join it. Nested blocks are
        savepoints, so an inner failure that is caught undoes only the inner writes."""
        depth = self._depth
        self._execute(Statement(savepoint(depth) if depth else BEGIN_WRITE))
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth = depth
            if depth:
                self._execute(Statement(rollback_to(depth)))
                self._execute(Statement(release(depth)))
            elif self._conn.in_transaction:
                self._execute(Statement(ROLLBACK))
            raise
        self._depth = depth
        self._execute(Statement(release(depth) if depth else COMMIT))

    # --- jobs ----------------------------------------------------------------------------

    def insert_job(self, job: Job) -> None:
        return self._run(q.insert_job(job))

    def get_job(self, job_id: str) -> Job | None:
        return self._run(q.get_job(job_id))

    def list_jobs(
        self,
        states: Sequence[JobState] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Job]:
        return self._run(q.list_jobs(states, limit, offset))

    def update_job(self, job: Job, *, expected_updated_at: datetime | None = None) -> Job:
        return self._run(q.update_job(job, expected_updated_at))

    def update_job_at_epoch(self, job: Job, *, expected_epoch: int) -> Job:
        return self._run(q.update_job_at_epoch(job, expected_epoch))

    def count_jobs_by_state(self) -> dict[JobState, int]:
        return self._run(q.count_jobs_by_state())

    def next_epoch(self, job_id: str) -> int:
        return self._run(q.next_epoch(job_id))

    def find_job_by_prefix(self, prefix: str, limit: int | None = None) -> list[Job]:
        return self._run(q.find_job_by_prefix(prefix, limit))

    # --- allocations ---------------------------------------------------------------------

    def insert_allocation(self, allocation: Allocation) -> None:
        return self._run(q.insert_allocation(allocation))

    def get_allocation(self, allocation_id: str) -> Allocation | None:
        return self._run(q.get_allocation(allocation_id))

    def list_allocations(
        self, cluster: str | None = None, states: Sequence[AllocationState] | None = None
    ) -> list[Allocation]:
        return self._run(q.list_allocations(cluster, states))

    def update_allocation(self, allocation: Allocation) -> None:
        return self._run(q.update_allocation(allocation))

    # --- segments ------------------------------------------------------------------------

    def insert_segment(self, segment: Segment) -> None:
        return self._run(q.insert_segment(segment))

    def close_segment(
        self,
        job_id: str,
        epoch: int,
        outcome: SegmentOutcome,
        end_step: int | None,
        reason: str | None = None,
    ) -> Segment:
        return self._run(q.close_segment(job_id, epoch, outcome, end_step, reason))

    def record_segment_times(
        self,
        job_id: str,
        epoch: int,
        noticed_at: datetime,
        worker_started_at: datetime | None = None,
        worker_ended_at: datetime | None = None,
    ) -> Segment:
        return self._run(
            q.record_segment_times(job_id, epoch, noticed_at, worker_started_at, worker_ended_at)
        )

    def list_segments(self, job_id: str) -> list[Segment]:
        return self._run(q.list_segments(job_id))

    def list_segments_on(self, allocation_ids: Sequence[str] | None = None) -> list[Segment]:
        return self._run(q.list_segments_on(allocation_ids))

    # --- audit ---------------------------------------------------------------------------

    def add_event(
        self,
        kind: str,
        message: str,
        *,
        job_id: str | None = None,
        allocation_id: str | None = None,
        cluster: str | None = None,
    ) -> AuditEvent:
        return self._run(
            q.add_event(kind, message, job_id=job_id, allocation_id=allocation_id, cluster=cluster)
        )

    def list_events(self, job_id: str | None = None, limit: int = 50) -> list[AuditEvent]:
        return self._run(q.list_events(job_id, limit))

    # --- clusters and daemon -------------------------------------------------------------

    def upsert_cluster_status(self, status: ClusterStatus) -> ClusterStatus:
        return self._run(q.upsert_cluster_status(status))

    def get_cluster_status(self, name: str) -> ClusterStatus | None:
        return self._run(q.get_cluster_status(name))

    def list_cluster_status(self) -> list[ClusterStatus]:
        return self._run(q.list_cluster_status())

    def set_cluster_enabled(self, name: str, enabled: bool) -> ClusterStatus:
        return self._run(q.set_cluster_enabled(name, enabled))

    def set_daemon_status(self, status: DaemonStatus) -> None:
        return self._run(q.set_daemon_status(status))

    def get_daemon_status(self) -> DaemonStatus | None:
        return self._run(q.get_daemon_status())

    # --- relaymd status ------------------------------------------------------------------

    def status_summary(self) -> StatusSummary:
        return self._run(q.status_summary())

    def schema_version(self) -> int:
        return self._run(q.schema_version())
