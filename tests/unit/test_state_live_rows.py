"""The live rows a store keeps between reads (ADR 0031): never different from the file.

Each verdict reads the file through a separate plain sqlite3 connection, not through the
store under test: what `kept_rows` returns must be exactly the rows stored, after the CLI's
writes (another connection), the store's own writes of every kind, and rolled-back ones.
"""

from __future__ import annotations

import json
import random
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from relaymd.models import Allocation, AllocationState, Job, JobState
from relaymd.state import StateStore
from tests.unit.test_state_helpers import T0, Store, call, make_job, transaction
from tests.unit.test_state_transactions import store as store  # the sync and async store fixture

LIVE = ("submitting", "pending", "running")


def allocation(alloc_id: str, *, job_id: str | None = None, minute: int = 0) -> Allocation:
    return Allocation(
        id=alloc_id,
        cluster=f"c{minute % 3}",
        partition="p1",
        image="openmm",
        state=AllocationState.RUNNING,
        walltime_s=600,
        job_id=job_id,
        submitted_at=T0 + timedelta(minutes=minute),
    )


def in_file(path: Path, job_ids: list[str]) -> tuple[list[Allocation], dict[str, Job]]:
    """The file's live allocations (in the order the store lists them) and the jobs
    `job_ids`, read with sqlite3 directly."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        allocs = conn.execute(
            f"SELECT data FROM allocations WHERE state IN {LIVE} ORDER BY submitted_at, id"
        ).fetchall()
        jobs = conn.execute(
            "SELECT id, data FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(job_ids),),
        ).fetchall()
    conn.close()
    return (
        [Allocation.model_validate_json(a[0]) for a in allocs],
        {j[0]: Job.model_validate_json(j[1]) for j in jobs},
    )


async def assert_kept_is_file(store: Store, job_ids: list[str]) -> None:
    """Each cluster's rows, the unbound ones, all of them and the jobs asked for."""
    allocs, jobs = in_file(store.path, job_ids)
    for cluster in ("c0", "c1", "c2", "elsewhere"):
        kept = await call(store.kept_rows(cluster, job_ids))
        assert kept.mine == [a for a in allocs if a.cluster == cluster]
        assert kept.unbound == [a for a in allocs if a.job_id is None]
        assert kept.everything == allocs
        assert kept.jobs == jobs


async def delete(store: Store, alloc_id: str, *, own: bool) -> None:
    """Delete a row through the store's own connection, or through another one."""
    sql, params = "DELETE FROM allocations WHERE id = ?", (alloc_id,)
    if not own:
        raw = sqlite3.connect(store.path)
        with raw:
            raw.execute(sql, params)
        raw.close()
    elif isinstance(store, StateStore):
        store._conn.execute(sql, params)
    else:
        await store._conn.execute(sql, params)


async def test_the_cli_s_writes_are_seen_at_once(store: Store) -> None:
    await call(store.insert_job(make_job("j1")))
    await call(store.insert_allocation(allocation("a1", job_id="j1")))
    await assert_kept_is_file(store, ["j1"])
    with StateStore.open(store.path) as cli:  # another connection: a submit and a cancel
        cli.insert_allocation(allocation("a2", minute=1))
        job = cli.get_job("j1")
        assert job is not None
        cli.update_job(job.model_copy(update={"state": JobState.CANCELLED}))
    await assert_kept_is_file(store, ["j1"])
    kept = await call(store.kept_rows("c0", ["j1"]))
    assert [a.id for a in kept.everything] == ["a1", "a2"]
    assert kept.jobs["j1"].state is JobState.CANCELLED


async def test_own_writes_are_read_back_row_by_row_not_whole(store: Store) -> None:
    for i in range(50):
        await call(store.insert_job(make_job(f"j{i}")))
        await call(store.insert_allocation(allocation(f"a{i}", job_id=f"j{i}", minute=i)))
    ids = [f"j{i}" for i in range(50)]
    await assert_kept_is_file(store, ids)
    full, read = store.live.full_reads, store.live.rows_read
    a3 = (await call(store.kept_rows("c0"))).everything[3]
    await call(store.update_allocation(a3.model_copy(update={"last_seq": 9})))
    job = (await call(store.kept_rows("c0", ["j7"]))).jobs["j7"]
    await call(store.update_job(job.model_copy(update={"ns_per_day": 12.5})))
    await assert_kept_is_file(store, ids)
    # What changed came back (a3 and j7), not the 100 rows kept.
    assert store.live.full_reads == full
    assert store.live.rows_read - read == 2


async def test_an_ended_allocation_leaves_and_a_new_one_takes_its_place_in_order(
    store: Store,
) -> None:
    for i in (0, 2, 4):
        await call(store.insert_allocation(allocation(f"a{i}", minute=i)))
    await call(store.kept_rows("c0"))
    ended = (await call(store.kept_rows("c0"))).everything[1]
    async with transaction(store):
        await call(
            store.update_allocations([ended.model_copy(update={"state": AllocationState.ENDED})])
        )
        await call(store.insert_allocation(allocation("a1", minute=1)))
        await call(store.insert_allocation(allocation("a3", minute=3)))
    assert [a.id for a in (await call(store.kept_rows("c0"))).everything] == [
        "a0",
        "a1",
        "a3",
        "a4",
    ]
    await assert_kept_is_file(store, [])


async def test_what_a_rolled_back_transaction_read_is_not_kept(store: Store) -> None:
    await call(store.insert_job(make_job("j1")))
    await call(store.insert_allocation(allocation("a1", job_id="j1")))
    await assert_kept_is_file(store, ["j1"])
    with pytest.raises(RuntimeError):
        async with transaction(store):
            a1 = (await call(store.kept_rows("c0"))).everything[0]
            await call(store.update_allocation(a1.model_copy(update={"last_seq": 99})))
            job = (await call(store.kept_rows("c0", ["j1"]))).jobs["j1"]
            await call(store.update_job(job.model_copy(update={"state": JobState.HELD})))
            inside = await call(store.kept_rows("c0", ["j1"]))  # the uncommitted rows, read back
            assert inside.everything[0].last_seq == 99
            assert inside.jobs["j1"].state is JobState.HELD
            raise RuntimeError("the cycle failed")
    await assert_kept_is_file(store, ["j1"])
    kept = await call(store.kept_rows("c0", ["j1"]))
    assert kept.everything[0].last_seq is None
    assert kept.jobs["j1"].state is JobState.QUEUED


async def test_random_writers_never_leave_the_kept_rows_behind_the_file(store: Store) -> None:
    """Own and the CLI's inserts, updates (news, binding, state), ends and deletes, some
    rolled back, in random order: after each step the kept rows are the file's."""
    rng = random.Random(31)
    job_ids = [f"j{i}" for i in range(12)]
    for job_id in job_ids:
        await call(store.insert_job(make_job(job_id)))
    made = 0
    cli = StateStore.open(store.path)
    try:
        for _step in range(150):
            writer: Store = store if rng.random() < 0.7 else cli
            kept = (await call(store.kept_rows("c0"))).everything
            action = rng.choice(["insert", "update", "end", "delete", "job", "rollback"])
            if action == "insert" or not kept:
                made += 1
                job = rng.choice([None, *job_ids])
                await call(
                    writer.insert_allocation(
                        allocation(f"n{made}", job_id=job, minute=rng.randrange(60))
                    )
                )
            elif action in ("update", "end"):
                target = rng.choice(kept)
                changes: list[dict[str, object]] = [
                    {"last_seq": rng.randrange(100)},  # news
                    {"job_id": rng.choice([None, *job_ids])},  # bound, unbound
                    {"state": AllocationState.PENDING},
                ]
                end = {"state": AllocationState.ENDED}
                change = rng.choice(changes) if action == "update" else end
                await call(writer.update_allocations([target.model_copy(update=change)]))
            elif action == "delete":  # no writer deletes rows; the change log covers it
                await delete(store, rng.choice(kept).id, own=writer is store)
            elif action == "job":
                job = await call(writer.get_job(rng.choice(job_ids)))
                await call(writer.update_job(job.model_copy(update={"ns_per_day": rng.random()})))
            else:
                with pytest.raises(RuntimeError):
                    async with transaction(store):
                        target = rng.choice(kept)
                        await call(
                            store.update_allocation(target.model_copy(update={"last_seq": 1000}))
                        )
                        await call(store.kept_rows("c0", job_ids))
                        raise RuntimeError("rolled back")
            await assert_kept_is_file(store, rng.sample(job_ids, 5))
    finally:
        cli.close()
