"""The store's methods, listed once for both front-ends.

Each entry names an operation of `relaymd.state.queries`; reading it from a store gives a
method with the operation's arguments (made by the store's `bind`) that runs it: returning the
value on `StateStore` (sqlite3), a coroutine of it on `AsyncStateStore` (aiosqlite).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from relaymd.state import live_rows
from relaymd.state import queries as q
from relaymd.state.live_rows import LiveRows
from relaymd.state.plan import Plan

if TYPE_CHECKING:
    from relaymd.state.async_store import AsyncStateStore
    from relaymd.state.sync_store import StateStore

P = ParamSpec("P")
T = TypeVar("T")


class Operation(Generic[P, T]):
    """A store method made from one operation: `store.name(*args)` runs `operation(*args)`."""

    def __init__(self, operation: Callable[P, Plan[T]]) -> None:
        self.operation = operation
        self.name = operation.__name__
        self.__doc__ = operation.__doc__

    def __set_name__(self, owner: type[object], name: str) -> None:
        self.name = name

    def operation_of(self, store: StateStore | AsyncStateStore) -> Callable[P, Plan[T]]:
        return self.operation

    @overload
    def __get__(self, store: None, owner: type[object]) -> Self: ...

    @overload
    def __get__(self, store: StateStore, owner: type[object]) -> Callable[P, T]: ...

    @overload
    def __get__(self, store: AsyncStateStore, owner: type[object]) -> Callable[P, Awaitable[T]]: ...

    def __get__(
        self, store: StateStore | AsyncStateStore | None, owner: type[object]
    ) -> Self | Callable[P, T] | Callable[P, Awaitable[T]]:
        if store is None:
            return self
        method = store.bind(self.operation_of(store))
        # Kept on the instance, which Python reads before a non-data descriptor: bound once.
        store.__dict__[self.name] = method
        return method


class OnLiveRows(Operation[P, T]):
    """An operation on the store's own `LiveRows` (ADR 0031), which it takes first."""

    def __init__(self, operation: Callable[Concatenate[LiveRows, P], Plan[T]]) -> None:
        self.on_rows = operation
        self.name = operation.__name__
        self.__doc__ = operation.__doc__

    def operation_of(self, store: StateStore | AsyncStateStore) -> Callable[P, Plan[T]]:
        return functools.partial(self.on_rows, store.live)


class StoreOperations:
    """Every operation of the state store, by the name callers use."""

    # jobs
    insert_job = Operation(q.insert_job)
    get_job = Operation(q.get_job)
    get_jobs = Operation(q.get_jobs)
    jobs_with_operator_request = Operation(q.jobs_with_operator_request)
    list_jobs = Operation(q.list_jobs)
    update_job = Operation(q.update_job)
    update_job_at_epoch = Operation(q.update_job_at_epoch)
    update_job_as_read = Operation(q.update_job_as_read)
    update_jobs_as_read = Operation(q.update_jobs_as_read)
    count_jobs_by_state = Operation(q.count_jobs_by_state)
    find_job_by_prefix = Operation(q.find_job_by_prefix)
    # allocations
    insert_allocation = Operation(q.insert_allocation)
    get_allocation = Operation(q.get_allocation)
    list_allocations = Operation(q.list_allocations)
    update_allocation = Operation(q.update_allocation)
    update_allocations = Operation(q.update_allocations)
    # the rows the daemon reads every cycle, kept between reads (ADR 0031)
    kept_rows = OnLiveRows(live_rows.kept_rows)
    # segments
    insert_segment = Operation(q.insert_segment)
    close_segment = Operation(q.close_segment)
    record_segment_times = Operation(q.record_segment_times)
    record_many_segment_times = Operation(q.record_many_segment_times)
    list_segments = Operation(q.list_segments)
    list_segments_on = Operation(q.list_segments_on)
    # audit
    add_event = Operation(q.add_event)
    add_events = Operation(q.add_events)
    list_events = Operation(q.list_events)
    # clusters and daemon
    upsert_cluster_status = Operation(q.upsert_cluster_status)
    get_cluster_status = Operation(q.get_cluster_status)
    list_cluster_status = Operation(q.list_cluster_status)
    set_cluster_enabled = Operation(q.set_cluster_enabled)
    set_daemon_status = Operation(q.set_daemon_status)
    get_daemon_status = Operation(q.get_daemon_status)
    # relaymd status
    status_summary = Operation(q.status_summary)
    schema_version = Operation(q.schema_version)
