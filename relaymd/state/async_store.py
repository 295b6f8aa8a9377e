"""The state store for the daemon: aiosqlite, one connection shared by the daemon's tasks.

Its methods are the operations listed in `relaymd.state.operations`, awaited; this class
only executes the statements they yield, inside the transaction they need.

Tasks share one connection, so one lock serializes operations; a task inside `transaction()`
(and tasks it starts there, which inherit its context) joins that transaction instead of
waiting for it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from pathlib import Path
from typing import ParamSpec, TypeVar

import aiosqlite

from relaymd.state import files
from relaymd.state import queries as q
from relaymd.state.live_rows import LiveRows
from relaymd.state.operations import StoreOperations
from relaymd.state.plan import (
    ROLLBACK,
    Block,
    Plan,
    Result,
    Snapshot,
    Statement,
    Steps,
    advance,
    execute_on,
    in_transaction,
)
from relaymd.state.row_memo import RowMemo

P = ParamSpec("P")
T = TypeVar("T")

# ids of the stores whose transaction the current context holds.
_HELD: ContextVar[frozenset[int]] = ContextVar("relaymd_state_transactions", default=frozenset())


class AsyncStateStore(StoreOperations):
    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._conn = connection
        self.path = path
        self._lock = asyncio.Lock()
        self._depth = 0
        # The daemon reads the same rows every cycle: parse each version once, and keep the
        # live ones while no other connection writes (ADR 0031).
        self.rows = RowMemo()
        self.live = LiveRows()

    @classmethod
    async def open(cls, path: Path | None = None) -> AsyncStateStore:
        target = await asyncio.to_thread(files.prepare, path)
        # isolation_level=None: the operations issue BEGIN/COMMIT themselves.
        conn = await aiosqlite.connect(target, timeout=q.BUSY_TIMEOUT_S, isolation_level=None)
        store = cls(conn, target)
        try:
            await store.run(q.open_connection(target))
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> AsyncStateStore:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _execute(self, statement: Statement) -> Result:
        # One trip to aiosqlite's thread per statement. Its public cursor API takes three
        # (execute, fetchall, close), each a thread handoff and an event-loop wakeup: ~145 µs
        # more CPU per statement on a 2-core VM (ADR 0030). `_execute` (run a function in the
        # connection's thread) and `_conn` (its sqlite3 connection there) are aiosqlite's;
        # tests/unit/test_state_store_trips.py fails if a version changes them.
        conn = self._conn
        if statement.sql.startswith(ROLLBACK):  # what was read inside may never be committed
            self.live.forget()
        result: Result = await conn._execute(  # type: ignore[no-untyped-call]
            lambda: execute_on(conn._conn, statement, self.rows)
        )
        return result

    async def _outcome(self, statement: Statement) -> Result | BaseException:
        try:
            return await self._execute(statement)
        except BaseException as exc:  # the operation rolls back, then re-raises it
            return exc

    async def _drive(self, steps: Steps[T]) -> T:
        step = advance(steps, None)
        while isinstance(step, Statement):
            step = advance(steps, await self._outcome(step))
        return step.value

    def _holds_transaction(self) -> bool:
        return id(self) in _HELD.get()

    async def run(self, plan: Plan[T]) -> T:
        """Execute one operation, in its own transaction or in the task's `transaction()`."""
        if self._holds_transaction():
            return await self._drive(plan.steps)
        async with self._lock:
            return await self._drive(in_transaction(plan))

    def bind(self, operation: Callable[P, Plan[T]]) -> Callable[P, Awaitable[T]]:
        """`operation` as a coroutine method of this store (see `relaymd.state.operations`)."""

        @functools.wraps(operation)
        async def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return await self.run(operation(*args, **kwargs))

        return method

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Group writes atomically; store methods called inside join it. Nested blocks are
        savepoints, so an inner failure that is caught undoes only the inner writes."""
        if self._holds_transaction():
            depth = self._depth
            block = Block(depth)
            await self._execute(block.begin)
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth = depth
                for statement in block.undo:
                    await self._execute(statement)
                raise
            self._depth = depth
            await self._execute(block.end)
            return
        async with self._lock:
            outer = Block(0)
            await self._execute(outer.begin)
            token = _HELD.set(_HELD.get() | {id(self)})
            self._depth = 1
            try:
                yield
                await self._execute(outer.end)
            except BaseException:
                if self._conn.in_transaction:
                    with suppress(Exception):  # keep the original error
                        for statement in outer.undo:
                            await self._execute(statement)
                raise
            finally:
                _HELD.reset(token)
                self._depth = 0

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[None]:
        """Read several operations from one consistent view without SQLite's write lock
        (BEGIN DEFERRED: in WAL mode writers go on meanwhile). Only reads belong inside;
        inside a `transaction()` it simply joins it."""
        if self._holds_transaction():
            yield
            return
        async with self._lock:
            await self._execute(Snapshot().begin)
            token = _HELD.set(_HELD.get() | {id(self)})
            try:
                yield
            finally:
                _HELD.reset(token)
                with suppress(Exception):  # a read-only transaction has nothing to lose
                    await self._execute(Snapshot().end)
