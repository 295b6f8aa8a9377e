"""The store operations a proportional daemon cycle stands on (ADR 0021): batched writes that
keep the fencing compare-and-set, reads of only the touched rows, and the decode memo."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from relaymd.models import Allocation, AllocationState, Job, JobState, OperatorRequest
from relaymd.state import AsyncStateStore, ConflictError, NotFoundError, StateStore
from relaymd.state.queries import SegmentTimesUpdate, ts
from relaymd.state.row_memo import RowMemo
from tests.unit.test_state_helpers import Store, call, make_job, make_segment, transaction
from tests.unit.test_state_transactions import store as store  # the sync and async store fixture

HOUR = timedelta(hours=1)


def alloc(alloc_id: str, job_id: str | None = None) -> Allocation:
    return Allocation(
        id=alloc_id,
        cluster="c1",
        partition="p1",
        image="openmm",
        state=AllocationState.RUNNING,
        walltime_s=600,
        job_id=job_id,
    )


async def test_batched_job_writes_are_fenced_on_the_copies_read(store: Store) -> None:
    for i in range(3):
        await call(store.insert_job(make_job(f"j{i}")))
    read = [await call(store.get_job(f"j{i}")) for i in range(3)]
    # The operator files a request on j1 after the daemon read it.
    with StateStore.open(store.path) as cli:
        current = cli.get_job("j1")
        assert current is not None
        cli.update_job(
            current.model_copy(update={"operator_request": OperatorRequest.CANCEL}),
            expected_updated_at=current.updated_at,
        )
    changes = [(j.model_copy(update={"state": JobState.HELD}), j) for j in read]
    with pytest.raises(ConflictError, match="j1"):
        async with transaction(store):
            await call(store.update_jobs_as_read(changes))
    with StateStore.open(store.path) as other:  # nothing written, the request kept
        jobs = {j.id: j for j in other.list_jobs()}
        assert {j.state for j in jobs.values()} == {JobState.QUEUED}
        assert jobs["j1"].operator_request is OperatorRequest.CANCEL
    # From fresh copies the same batch goes through, in one statement.
    fresh = [await call(store.get_job(f"j{i}")) for i in range(3)]
    stored = await call(
        store.update_jobs_as_read(
            [(j.model_copy(update={"state": JobState.HELD}), j) for j in fresh]
        )
    )
    assert [j.updated_at > f.updated_at for j, f in zip(stored, fresh, strict=True)] == [True] * 3
    with StateStore.open(store.path) as other:
        assert {j.state for j in other.list_jobs()} == {JobState.HELD}


async def test_batched_allocation_writes_name_a_missing_row(store: Store) -> None:
    await call(store.insert_allocation(alloc("a1")))
    with pytest.raises(NotFoundError, match="a2"):
        async with transaction(store):
            await call(store.update_allocations([alloc("a1", "j9"), alloc("a2")]))
    got = await call(store.get_allocation("a1"))
    assert got.job_id is None  # the batch was all or nothing


async def test_touched_jobs_and_requests_are_found_without_reading_the_rest(store: Store) -> None:
    async with transaction(store):  # more ids than one statement's variables on old SQLite
        for i in range(2000):
            await call(store.insert_job(make_job(f"j{i:04d}", created_s=i)))
    wanted = [f"j{i:04d}" for i in range(0, 2000, 2)] + ["missing"]
    found = await call(store.get_jobs(wanted))
    assert sorted(found) == wanted[:-1]
    assert await call(store.jobs_with_operator_request()) == []
    job = await call(store.get_job("j1500"))
    await call(
        store.update_job(job.model_copy(update={"operator_request": OperatorRequest.CANCEL}))
    )
    assert [j.id for j in await call(store.jobs_with_operator_request())] == ["j1500"]
    head = await call(store.list_jobs(states=[JobState.QUEUED], limit=3))
    assert [j.id for j in head] == ["j0000", "j0001", "j0002"]


async def test_the_memo_never_returns_a_row_another_writer_changed(tmp_path: Path) -> None:
    async with await AsyncStateStore.open(tmp_path / "state.sqlite") as daemon:
        await daemon.insert_job(make_job("j1"))
        first = await daemon.get_job("j1")
        again = await daemon.get_job("j1")
        assert first == again  # a hit
        assert daemon.rows.hits >= 1
        with StateStore.open(daemon.path) as cli:
            cli.update_job(first.model_copy(update={"state": JobState.HELD}))  # type: ignore[union-attr]
        changed = await daemon.get_job("j1")
        assert changed is not None and changed.state is JobState.HELD
        # A row the daemon wrote itself is read back without parsing it again.
        misses = daemon.rows.misses
        await daemon.update_jobs_as_read([(changed.model_copy(update={"retries": 1}), changed)])
        await daemon.get_job("j1")
        assert daemon.rows.misses == misses


async def test_worker_times_for_many_segments_are_one_read_and_one_write(
    store: Store,
) -> None:
    for i in range(3):
        await call(store.insert_job(make_job(f"j{i}")))
        await call(store.insert_segment(make_segment(f"j{i}", 1)))
    assigned = (await call(store.list_segments("j0")))[0].started_at
    noticed = assigned + timedelta(minutes=1)
    updates = [
        # A skewed clock: clamped into [assigned, noticed], as one at a time would be.
        SegmentTimesUpdate(
            job_id="j0", epoch=1, noticed_at=noticed, worker_started_at=assigned - HOUR
        ),
        SegmentTimesUpdate(job_id="j0", epoch=1, noticed_at=noticed, worker_ended_at=noticed),
        SegmentTimesUpdate(
            job_id="j2", epoch=1, noticed_at=noticed, worker_ended_at=noticed + HOUR
        ),
        SegmentTimesUpdate(job_id="j9", epoch=4, noticed_at=noticed, worker_started_at=noticed),
    ]
    statements: list[str] = []
    inner = store._execute

    def counted(statement: Any) -> Any:  # either front-end's: a Result or its coroutine
        statements.append(statement.sql.split()[0])
        return inner(statement)

    store._execute = counted  # type: ignore[method-assign]
    async with transaction(store):
        recorded = await call(store.record_many_segment_times(updates))
    store._execute = inner  # type: ignore[method-assign]
    # The segment of j9 does not exist: skipped, as `record_segment_times` callers do.
    assert sorted(s.job_id for s in recorded) == ["j0", "j2"]
    assert [s for s in statements if s in ("SELECT", "UPDATE")] == ["SELECT", "UPDATE"]
    with StateStore.open(store.path) as other:
        j0 = other.list_segments("j0")[0]
        assert (j0.worker_started_at, j0.worker_ended_at) == (assigned, noticed)
        assert other.list_segments("j2")[0].worker_ended_at == noticed
        assert other.list_segments("j1")[0].worker_started_at is None


async def test_rows_whose_keys_did_not_change_keep_columns_and_counters_in_step(
    store: Store,
) -> None:
    """A heartbeat's speed (data and ns_per_day only) and a state change, in one batch: every
    column still says what the row's JSON says, and the status counters stay exact."""
    for i in range(2):
        await call(store.insert_job(make_job(f"j{i}")))
    await call(store.insert_allocation(alloc("a0", "j0")))
    await call(store.insert_allocation(alloc("a1", "j1")))
    read = [await call(store.get_job(f"j{i}")) for i in range(2)]
    read_allocs = {a: await call(store.get_allocation(a)) for a in ("a0", "a1")}
    async with transaction(store):
        await call(
            store.update_jobs_as_read(
                [
                    (read[0].model_copy(update={"ns_per_day": 42.0}), read[0]),
                    (read[1].model_copy(update={"state": JobState.HELD}), read[1]),
                ]
            )
        )
        await call(
            store.update_allocations(
                [
                    read_allocs["a0"].model_copy(update={"last_seq": 7}),
                    read_allocs["a1"].model_copy(update={"state": AllocationState.ENDED}),
                ],
                read_allocs,
            )
        )
    with StateStore.open(store.path) as other:
        conn = other._conn
        for row in conn.execute("SELECT state, ns_per_day, updated_at, data FROM jobs"):
            job = Job.model_validate_json(row[3])
            assert (row[0], row[1], row[2]) == (job.state.value, job.ns_per_day, ts(job.updated_at))
        assert {j.id: j.ns_per_day for j in other.list_jobs()}["j0"] == 42.0
        for row in conn.execute("SELECT state, job_id, data FROM allocations"):
            allocation = Allocation.model_validate_json(row[2])
            assert (row[0], row[1]) == (allocation.state.value, allocation.job_id)
        assert other.get_allocation("a0").last_seq == 7  # type: ignore[union-attr]
        counts = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT * FROM job_counts")}
        assert counts["queued"] == (1, 42_000_000) and counts["held"] == (1, 0)
        by_state = other.status_summary().allocations_on("c1")
        assert by_state == {AllocationState.RUNNING: 1, AllocationState.ENDED: 1}


def test_the_memo_keeps_one_version_per_row_so_every_row_changing_still_hits() -> None:
    """Clusters in turn read their rows and write every one changed (every heartbeat moved)
    with room for fewer than two versions of each: superseded versions must not push the
    rows the next cluster reads out of the memo."""
    memo = RowMemo(capacity=150)
    clusters = [[make_job(f"j{c}{i:02d}") for i in range(20)] for c in range(5)]
    texts = {j.id: j.model_dump_json() for rows in clusters for j in rows}
    for rows in clusters:
        for job in rows:
            memo.remember(job, texts[job.id])
    for round_ in range(3):
        for rows in clusters:
            misses = memo.misses
            for job in rows:  # the cycle reads its rows: each the version last written
                memo.decode(Job, texts[job.id])
            assert memo.misses == misses, f"round {round_}: a current row was evicted"
            for job in rows:
                changed = job.model_copy(update={"retries": round_ + 1})
                texts[job.id] = changed.model_dump_json()
                memo.remember(changed, texts[job.id])
    assert memo.hits == 300
