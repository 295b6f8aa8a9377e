"""The daemon's store makes one trip to aiosqlite's thread per statement (ADR 0030).

aiosqlite's cursor API takes three (execute, fetchall, close), each a thread handoff and an
event-loop wakeup; the store runs a whole statement there in one. This counts the trips with
aiosqlite's own queueing function, so a version of aiosqlite that changes it fails here, and
checks that what the statements return (rows, rowcount, lastrowid, errors) is what the
sync front-end, plain sqlite3, returns.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from relaymd.models import AllocationState
from relaymd.state import AsyncStateStore, StateStore
from relaymd.state import queries as q
from relaymd.state.plan import Statement
from tests.unit.test_state_helpers import make_allocation, make_job


async def test_one_trip_per_statement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await AsyncStateStore.open(tmp_path / "state.sqlite")
    counts = Counter[str]()
    trip = aiosqlite.Connection._execute
    execute = store._execute

    async def counted_trip(self: aiosqlite.Connection, fn: Any, *args: Any, **kw: Any) -> Any:
        counts["trips"] += 1
        return await trip(self, fn, *args, **kw)

    async def counted_statement(statement: Statement) -> Any:
        counts["statements"] += 1
        return await execute(statement)

    try:
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted_trip)
        monkeypatch.setattr(store, "_execute", counted_statement)
        for n in range(3):
            await store.insert_job(make_job(f"j{n}"))
            await store.insert_allocation(make_allocation(f"a{n}"))
        running = [
            make_allocation(f"a{n}").model_copy(update={"state": AllocationState.RUNNING})
            for n in range(3)
        ]
        await store.run(q.update_allocations(running))  # executemany
        assert len(await store.list_jobs()) == 3
        found = await store.get_allocation("a1")
        assert found is not None and found.state is AllocationState.RUNNING
        assert counts["statements"] > 10
        assert counts["trips"] == counts["statements"]
    finally:
        await store.close()


@pytest.mark.parametrize("front", ["sync", "async"])
async def test_results_and_errors_as_sqlite3_gives_them(tmp_path: Path, front: str) -> None:
    path = tmp_path / "state.sqlite"
    if front == "sync":
        sync = StateStore.open(path)
        run: Any = sync._execute
    else:
        store = await AsyncStateStore.open(path)
        run = store._execute

    async def do(statement: Statement) -> Any:
        result = run(statement)
        return await result if front == "async" else result

    try:
        await do(Statement("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"))
        inserted = await do(Statement("INSERT INTO t (v) VALUES (?)", ("x",)))
        assert inserted.lastrowid == 1 and inserted.rowcount == 1
        many = await do(Statement("INSERT INTO t (v) VALUES (?)", [("y",), ("z",)], many=True))
        assert many.rowcount == 2 and many.rows == []
        rows = await do(Statement("SELECT k, v FROM t ORDER BY k"))
        assert rows.rows == [(1, "x"), (2, "y"), (3, "z")] and rows.rowcount == -1
        updated = await do(Statement("UPDATE t SET v = 'w' WHERE k > 1"))
        assert updated.rowcount == 2
        with pytest.raises(sqlite3.IntegrityError):
            await do(Statement("INSERT INTO t (k, v) VALUES (1, 'again')"))
        with pytest.raises(sqlite3.OperationalError):
            await do(Statement("SELECT nope FROM t"))
    finally:
        if front == "sync":
            sync.close()
        else:
            await store.close()
