"""transaction(): several writes commit together or not at all, on both front-ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relaymd.models import JobState, SegmentOutcome
from relaymd.state import AsyncStateStore, DuplicateError, StateStore
from tests.unit.test_state_helpers import (
    Store,
    advance_epoch,
    call,
    make_job,
    make_segment,
    open_front_end,
    transaction,
)


class Boom(Exception):
    pass


@pytest.fixture(params=["sync", "async"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_front_end(request.param, tmp_path / "state.sqlite") as front_end:
        yield front_end


async def test_a_cycle_commits_all_its_writes_together(store: Store) -> None:
    await call(store.insert_job(make_job("j1")))
    async with transaction(store):
        epoch = await advance_epoch(store, "j1")
        job = await call(store.get_job("j1"))  # reads inside see the transaction's writes
        await call(store.update_job(job.model_copy(update={"state": JobState.ASSIGNED})))
        await call(store.insert_segment(make_segment("j1", epoch)))
        await call(store.add_event("assigned", "to a1", job_id="j1"))
        # Another connection (the CLI) does not see any of it before the commit.
        with StateStore.open(store.path) as other:
            assert other.get_job("j1").epoch == 0  # type: ignore[union-attr]
            assert other.list_segments("j1") == []
    with StateStore.open(store.path) as other:
        assert other.get_job("j1").state is JobState.ASSIGNED  # type: ignore[union-attr]
        assert len(other.list_segments("j1")) == 1


async def test_a_failure_rolls_back_every_write_of_the_transaction(store: Store) -> None:
    await call(store.insert_job(make_job("j1")))
    with pytest.raises(Boom):
        async with transaction(store):
            await advance_epoch(store, "j1")
            await call(store.insert_job(make_job("j2")))
            await call(store.add_event("assigned", "to a1", job_id="j1"))
            raise Boom
    assert (await call(store.get_job("j1"))).epoch == 0
    assert await call(store.get_job("j2")) is None
    assert await call(store.list_events()) == []
    # The store is usable afterwards.
    assert await advance_epoch(store, "j1") == 1


async def test_a_failing_operation_inside_joins_and_fails_the_transaction(store: Store) -> None:
    await call(store.insert_job(make_job("j1")))
    with pytest.raises(DuplicateError):
        async with transaction(store):
            await call(store.insert_job(make_job("j2")))
            await call(store.insert_job(make_job("j1")))
    assert await call(store.get_job("j2")) is None


async def test_a_nested_block_is_a_savepoint(store: Store) -> None:
    await call(store.insert_segment(make_segment("j1", 1)))
    async with transaction(store):
        await call(store.insert_job(make_job("outer")))
        with pytest.raises(Boom):
            async with transaction(store):
                await call(store.insert_job(make_job("inner")))
                await call(store.close_segment("j1", 1, SegmentOutcome.LOST, None))
                raise Boom
        async with transaction(store):
            await call(store.insert_job(make_job("inner-ok")))
    ids = {j.id for j in await call(store.list_jobs())}
    assert ids == {"outer", "inner-ok"}
    assert (await call(store.list_segments("j1")))[0].outcome is SegmentOutcome.RUNNING


async def test_other_tasks_wait_for_a_transaction_instead_of_joining_it(tmp_path: Path) -> None:
    async with await AsyncStateStore.open(tmp_path / "state.sqlite") as store:
        inside = asyncio.Event()

        async def cycle() -> None:
            async with store.transaction():
                await store.insert_job(make_job("cycle"))
                inside.set()
                await asyncio.sleep(0.05)  # the other task tries to write meanwhile
                raise Boom

        async def cli_like() -> None:
            await inside.wait()
            await store.insert_job(make_job("other"))

        results = await asyncio.gather(cycle(), cli_like(), return_exceptions=True)
        assert isinstance(results[0], Boom)
        assert results[1] is None
        # The other task's write was neither rolled back with the cycle nor lost.
        assert [j.id for j in await store.list_jobs()] == ["other"]


async def test_tasks_started_inside_a_transaction_join_it(tmp_path: Path) -> None:
    async with await AsyncStateStore.open(tmp_path / "state.sqlite") as store:
        async with store.transaction():
            await asyncio.gather(*(store.insert_job(make_job(f"j{i}")) for i in range(5)))
        assert len(await store.list_jobs()) == 5


async def test_cancelling_a_transaction_rolls_it_back(tmp_path: Path) -> None:
    async with await AsyncStateStore.open(tmp_path / "state.sqlite") as store:
        started = asyncio.Event()

        async def cycle() -> None:
            async with store.transaction():
                await store.insert_job(make_job("half"))
                started.set()
                await asyncio.sleep(60)

        task = asyncio.create_task(cycle())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await store.get_job("half") is None
        await store.insert_job(make_job("after"))
        assert [j.id for j in await store.list_jobs()] == ["after"]
