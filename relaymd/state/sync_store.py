"""The state store for the CLI and tests: stdlib sqlite3, one connection, one thread.

Its methods are the operations listed in `relaymd.state.operations`; this class only executes
the statements they yield, inside the transaction they need.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import ParamSpec, TypeVar

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
    advance,
    execute_on,
    in_transaction,
)

P = ParamSpec("P")
T = TypeVar("T")


class StateStore(StoreOperations):
    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._conn = connection
        self.path = path
        self._depth = 0  # nesting of transaction(); > 0 means operations join it
        self.live = LiveRows()  # the live rows kept between reads (ADR 0031)

    @classmethod
    def open(cls, path: Path | None = None) -> StateStore:
        target = files.prepare(path)
        # isolation_level=None: the operations issue BEGIN/COMMIT themselves.
        conn = sqlite3.connect(target, timeout=q.BUSY_TIMEOUT_S, isolation_level=None)
        store = cls(conn, target)
        try:
            store.run(q.open_connection(target))
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _execute(self, statement: Statement) -> Result:
        if statement.sql.startswith(ROLLBACK):  # what was read inside may never be committed
            self.live.forget()
        return execute_on(self._conn, statement)

    def _outcome(self, statement: Statement) -> Result | BaseException:
        try:
            return self._execute(statement)
        except BaseException as exc:  # the operation rolls back, then re-raises it
            return exc

    def run(self, plan: Plan[T]) -> T:
        """Execute one operation, in its own transaction or in the open `transaction()`."""
        steps = plan.steps if self._depth else in_transaction(plan)
        step = advance(steps, None)
        while isinstance(step, Statement):
            step = advance(steps, self._outcome(step))
        return step.value

    def bind(self, operation: Callable[P, Plan[T]]) -> Callable[P, T]:
        """`operation` as a method of this store (see `relaymd.state.operations`)."""

        @functools.wraps(operation)
        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.run(operation(*args, **kwargs))

        return method

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes atomically; store methods called inside join it. Nested blocks are
        savepoints, so an inner failure that is caught undoes only the inner writes."""
        depth = self._depth
        block = Block(depth)
        self._execute(block.begin)
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth = depth
            if depth or self._conn.in_transaction:
                for statement in block.undo:
                    self._execute(statement)
            raise
        self._depth = depth
        self._execute(block.end)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Read several operations from one consistent view without SQLite's write lock
        (BEGIN DEFERRED); only reads belong inside. Inside a `transaction()` it joins it."""
        if self._depth:
            yield
            return
        self._execute(Snapshot().begin)
        self._depth = 1
        try:
            yield
        finally:
            self._depth = 0
            with suppress(Exception):  # a read-only transaction has nothing to lose
                self._execute(Snapshot().end)
