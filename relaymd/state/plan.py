"""How one store operation is written once and run by both the sync and the async front-end.

An operation is a generator that yields `Statement`s and receives each one's `Result`; it
returns the operation's value. It does no I/O itself, so `StateStore` (sqlite3) and
`AsyncStateStore` (aiosqlite) are only loops that execute what it yields. A `Plan` pairs the
generator with whether it writes, which decides how the executor opens its transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

if TYPE_CHECKING:
    import sqlite3

    from relaymd.state.row_memo import RowMemo

T = TypeVar("T")
P = ParamSpec("P")

Params = Sequence[Any] | Mapping[str, Any]

# Transaction control, shared by both executors. IMMEDIATE takes the write lock up front:
# a deferred transaction that later writes fails at once with SQLITE_BUSY instead of waiting.
BEGIN_WRITE = "BEGIN IMMEDIATE"
BEGIN_READ = "BEGIN DEFERRED"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: Params = ()
    # The same statement once per parameter set of `params` (executemany): one call into
    # SQLite for many rows; the result's rowcount is their sum.
    many: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rowcount: int = -1
    lastrowid: int | None = None
    # The executor's memo of decoded rows (relaymd.state.row_memo), when it keeps one.
    memo: RowMemo | None = None


Steps = Generator[Statement, Result, T]


def execute_on(
    conn: sqlite3.Connection, statement: Statement, memo: RowMemo | None = None
) -> Result:
    """One statement on a sqlite3 connection, its cursor closed: what both executors run
    (the async one inside aiosqlite's thread, in one trip)."""
    if statement.many:
        cursor = conn.executemany(statement.sql, statement.params)
    else:
        cursor = conn.execute(statement.sql, statement.params)
    try:
        return Result(cursor.fetchall(), cursor.rowcount, cursor.lastrowid, memo)
    finally:
        cursor.close()


class Access(Enum):
    READ = "read"
    WRITE = "write"
    RAW = "raw"  # the operation issues its own transaction control (opening, migrating)


@dataclass(slots=True)
class Plan(Generic[T]):
    access: Access
    steps: Steps[T]


def reads(fn: Callable[P, Steps[T]]) -> Callable[P, Plan[T]]:
    """Mark an operation as read-only: run it in a deferred (snapshot) transaction."""

    @functools.wraps(fn)
    def plan(*args: P.args, **kwargs: P.kwargs) -> Plan[T]:
        return Plan(Access.READ, fn(*args, **kwargs))

    return plan


def writes(fn: Callable[P, Steps[T]]) -> Callable[P, Plan[T]]:
    """Mark an operation as writing: run it in BEGIN IMMEDIATE (or the caller's transaction)."""

    @functools.wraps(fn)
    def plan(*args: P.args, **kwargs: P.kwargs) -> Plan[T]:
        return Plan(Access.WRITE, fn(*args, **kwargs))

    return plan


def in_transaction(plan: Plan[T]) -> Steps[T]:
    """The plan's statements wrapped in the transaction its access needs."""
    if plan.access is Access.RAW:
        return (yield from plan.steps)
    yield Statement(BEGIN_WRITE if plan.access is Access.WRITE else BEGIN_READ)
    try:
        value = yield from plan.steps
        yield Statement(COMMIT)
    except BaseException:
        with suppress(Exception):  # SQLite may already have rolled back (e.g. disk full)
            yield Statement(ROLLBACK)
        raise
    return value


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    value: T


def advance(steps: Steps[T], outcome: Result | BaseException | None) -> Statement | Done[T]:
    """Hand the operation the outcome of its last statement (None before the first; an error
    is raised inside it, so it can roll back); its next statement, or its value when done.
    Each front-end is a loop of `advance` around its own way of executing a statement."""
    try:
        if outcome is None:
            return next(steps)
        if isinstance(outcome, BaseException):
            return steps.throw(outcome)
        return steps.send(outcome)
    except StopIteration as stop:
        return Done(stop.value)


@dataclass(frozen=True, slots=True)
class Block:
    """The statements of a `transaction()` block nested `depth` deep: the transaction itself
    at depth 0, a savepoint inside it deeper (an inner failure then undoes only its writes)."""

    depth: int

    @property
    def begin(self) -> Statement:
        return Statement(f"SAVEPOINT {self._name}" if self.depth else BEGIN_WRITE)

    @property
    def end(self) -> Statement:
        return Statement(f"RELEASE SAVEPOINT {self._name}" if self.depth else COMMIT)

    @property
    def undo(self) -> tuple[Statement, ...]:
        if not self.depth:
            return (Statement(ROLLBACK),)
        return (Statement(f"ROLLBACK TO SAVEPOINT {self._name}"), self.end)

    @property
    def _name(self) -> str:
        return f"relaymd_{self.depth}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The statements of a `snapshot()` block: one consistent view for several reads, without
    the write lock (in WAL mode, writers go on meanwhile)."""

    begin: Statement = Statement(BEGIN_READ)
    end: Statement = Statement(COMMIT)


def first_value(result: Result) -> Any:
    return result.rows[0][0] if result.rows else None
