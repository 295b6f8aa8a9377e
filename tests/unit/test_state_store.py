"""Round trips of every state store method, on real SQLite files, through both front-ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from relaymd.models import (
    AllocationState,
    ClusterReachability,
    ClusterStatus,
    DaemonStatus,
    GpuInfo,
    JobState,
    OperatorRequest,
    SegmentOutcome,
)
from relaymd.state import (
    AsyncStateStore,
    ConflictError,
    DuplicateError,
    NotFoundError,
    StateStore,
)
from tests.unit.test_state_helpers import (
    T0,
    Store,
    advance_epoch,
    call,
    make_allocation,
    make_job,
    make_segment,
    open_front_end,
)


@pytest.fixture(params=["sync", "async"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_front_end(request.param, tmp_path / "state" / "state.sqlite") as front_end:
        yield front_end


async def test_job_round_trip_keeps_every_field(store: Store) -> None:
    job = make_job("j1").model_copy(
        update={"log_tail": ["a", "b"], "operator_request": OperatorRequest.CANCEL, "step": 7}
    )
    await call(store.insert_job(job))
    assert await call(store.get_job("j1")) == job
    assert await call(store.get_job("missing")) is None
    with pytest.raises(DuplicateError):
        await call(store.insert_job(job))


async def test_list_jobs_orders_by_priority_then_age_and_filters(store: Store) -> None:
    jobs = [
        make_job("old", created_s=0),
        make_job("new", created_s=5),
        make_job("vip", priority=9, created_s=9),
        make_job("done", state=JobState.COMPLETED, created_s=1),
    ]
    for job in jobs:
        await call(store.insert_job(job))
    listed = await call(store.list_jobs())
    assert [j.id for j in listed] == ["vip", "old", "done", "new"]
    queued = await call(store.list_jobs(states=[JobState.QUEUED]))
    assert [j.id for j in queued] == ["vip", "old", "new"]
    page = await call(store.list_jobs(states=[JobState.QUEUED], limit=1, offset=1))
    assert [j.id for j in page] == ["old"]
    assert await call(store.list_jobs(states=[])) == []


async def test_update_job_bumps_updated_at_and_never_lowers_the_epoch(store: Store) -> None:
    job = make_job("j1")
    await call(store.insert_job(job))
    assert await advance_epoch(store, "j1") == 1
    assert await advance_epoch(store, "j1") == 2

    # A copy read before the two epoch moves must not undo them.
    stored = await call(store.update_job(job.model_copy(update={"state": JobState.RUNNING})))
    assert stored.epoch == 2
    assert stored.updated_at > job.updated_at
    again = await call(store.get_job("j1"))
    assert again == stored
    assert again.state is JobState.RUNNING

    with pytest.raises(NotFoundError):
        await call(store.update_job(make_job("ghost")))
    with pytest.raises(NotFoundError):
        await call(store.update_job_at_epoch(make_job("ghost"), 0))


async def test_update_job_compare_and_set_detects_a_concurrent_change(store: Store) -> None:
    await call(store.insert_job(make_job("j1")))
    read = await call(store.get_job("j1"))
    first = await call(
        store.update_job(
            read.model_copy(update={"retries": 1}), expected_updated_at=read.updated_at
        )
    )
    with pytest.raises(ConflictError):
        await call(
            store.update_job(
                read.model_copy(update={"retries": 9}), expected_updated_at=read.updated_at
            )
        )
    assert (await call(store.get_job("j1"))).retries == 1
    await call(
        store.update_job(
            first.model_copy(update={"retries": 2}), expected_updated_at=first.updated_at
        )
    )
    assert (await call(store.get_job("j1"))).retries == 2


async def test_update_job_at_epoch_refuses_a_writer_whose_epoch_is_stale(
    store: Store, tmp_path: Path
) -> None:
    """The fencing token's compare-and-set: two writers decided epoch 1 from the same row;
    the second finds the epoch moved, gets ConflictError and writes nothing."""
    import sqlite3

    await call(store.insert_job(make_job("j1")))
    read = await call(store.get_job("j1"))
    ours = read.model_copy(update={"epoch": 1, "allocation_id": "a1"})
    stored = await call(store.update_job_at_epoch(ours, expected_epoch=0))
    assert (stored.epoch, stored.allocation_id) == (1, "a1")
    assert stored.updated_at > read.updated_at
    theirs = read.model_copy(update={"epoch": 1, "allocation_id": "a2"})
    with pytest.raises(ConflictError, match="epoch 1, not 0"):
        await call(store.update_job_at_epoch(theirs, expected_epoch=0))
    with pytest.raises(ValueError, match="lower"):
        await call(store.update_job_at_epoch(read, expected_epoch=1))
    with pytest.raises(NotFoundError):
        await call(store.update_job_at_epoch(make_job("ghost"), expected_epoch=0))
    with sqlite3.connect(tmp_path / "state" / "state.sqlite") as db:
        rows = db.execute("SELECT epoch, allocation_id FROM jobs WHERE id = 'j1'").fetchall()
    assert rows == [(1, "a1")]


async def test_count_jobs_by_state_lists_every_state(store: Store) -> None:
    for i, state in enumerate([JobState.QUEUED, JobState.QUEUED, JobState.RUNNING]):
        await call(store.insert_job(make_job(f"j{i}", state=state)))
    counts = await call(store.count_jobs_by_state())
    assert counts == {**dict.fromkeys(JobState, 0), JobState.QUEUED: 2, JobState.RUNNING: 1}


async def test_find_job_by_prefix(store: Store) -> None:
    for job_id in ("jab1", "jab2", "jb_x", "jc"):
        await call(store.insert_job(make_job(job_id)))
    assert [j.id for j in await call(store.find_job_by_prefix("jab"))] == ["jab1", "jab2"]
    assert [j.id for j in await call(store.find_job_by_prefix("jab2"))] == ["jab2"]
    # `_` is an ordinary character, not a wildcard.
    assert [j.id for j in await call(store.find_job_by_prefix("jb_"))] == ["jb_x"]
    assert await call(store.find_job_by_prefix("jz")) == []
    assert [j.id for j in await call(store.find_job_by_prefix("j", limit=2))] == ["jab1", "jab2"]
    with pytest.raises(ValueError):
        await call(store.find_job_by_prefix(""))


async def test_allocation_round_trip_list_and_update(store: Store) -> None:
    a1 = make_allocation("a1", submitted_s=0).model_copy(
        update={"gpus": [GpuInfo(name="H100", memory_total_mib=81559)], "scheduler_id": "42"}
    )
    a2 = make_allocation("a2", cluster="clusterB", submitted_s=1)
    a3 = make_allocation("a3", state=AllocationState.RUNNING, submitted_s=2)
    for a in (a1, a2, a3):
        await call(store.insert_allocation(a))
    assert await call(store.get_allocation("a1")) == a1
    assert await call(store.get_allocation("nope")) is None
    with pytest.raises(DuplicateError):
        await call(store.insert_allocation(a1))

    assert [a.id for a in await call(store.list_allocations())] == ["a1", "a2", "a3"]
    assert [a.id for a in await call(store.list_allocations(cluster="clusterA"))] == ["a1", "a3"]
    running = await call(store.list_allocations(states=[AllocationState.RUNNING]))
    assert [a.id for a in running] == ["a3"]
    both = await call(store.list_allocations(cluster="clusterA", states=[AllocationState.PENDING]))
    assert [a.id for a in both] == ["a1"]

    ended = a1.model_copy(update={"state": AllocationState.ENDED, "end_reason": "TIMEOUT"})
    await call(store.update_allocation(ended))
    assert await call(store.get_allocation("a1")) == ended
    assert await call(store.list_allocations(states=[AllocationState.PENDING])) == [a2]
    with pytest.raises(NotFoundError):
        await call(store.update_allocation(make_allocation("ghost")))


async def test_segments_record_the_relay_history(store: Store) -> None:
    for epoch in (2, 1):
        await call(store.insert_segment(make_segment("j1", epoch, allocation_id=f"a{epoch}")))
    await call(store.insert_segment(make_segment("j2", 1)))
    with pytest.raises(DuplicateError):
        await call(store.insert_segment(make_segment("j1", 1)))

    closed = await call(store.close_segment("j1", 1, SegmentOutcome.HANDOFF, 100, "deadline"))
    assert closed.outcome is SegmentOutcome.HANDOFF
    assert (closed.end_step, closed.reason) == (100, "deadline")
    assert closed.ended_at is not None

    history = await call(store.list_segments("j1"))
    assert [(s.epoch, s.allocation_id, s.outcome) for s in history] == [
        (1, "a1", SegmentOutcome.HANDOFF),
        (2, "a2", SegmentOutcome.RUNNING),
    ]
    assert history[0] == closed

    # A later, better classification overwrites the outcome but keeps when it ended.
    again = await call(store.close_segment("j1", 1, SegmentOutcome.LOST, None, "node lost"))
    assert (again.outcome, again.end_step, again.ended_at) == (
        SegmentOutcome.LOST,
        100,
        closed.ended_at,
    )
    with pytest.raises(NotFoundError):
        await call(store.close_segment("j1", 9, SegmentOutcome.FAILED, 1))


async def test_audit_events_keep_the_newest_in_order(store: Store) -> None:
    first = await call(store.add_event("submitted", "from /tmp/x", job_id="j1"))
    assert first.id is not None
    await call(store.add_event("cluster_down", "ssh refused", cluster="clusterA"))
    for i in range(3):
        await call(store.add_event("note", f"n{i}", job_id="j1", allocation_id="a1"))

    events = await call(store.list_events())
    assert [e.message for e in events] == ["from /tmp/x", "ssh refused", "n0", "n1", "n2"]
    assert events[0] == first
    assert events[1].cluster == "clusterA"
    assert [e.id for e in events] == sorted(e.id for e in events)

    mine = await call(store.list_events(job_id="j1", limit=2))
    assert [(e.message, e.allocation_id) for e in mine] == [("n1", "a1"), ("n2", "a1")]


async def test_cluster_status_upsert_keeps_the_operator_switch(store: Store) -> None:
    assert await call(store.get_cluster_status("clusterA")) is None
    status = ClusterStatus(
        name="clusterA",
        reachability=ClusterReachability.REACHABLE,
        last_poll_at=T0,
        last_ok_at=T0,
        poll_interval_s=30.0,
        pending=2,
        running=1,
    )
    assert await call(store.upsert_cluster_status(status)) == status
    assert await call(store.get_cluster_status("clusterA")) == status

    disabled = await call(store.set_cluster_enabled("clusterA", False))
    assert disabled == status.model_copy(update={"enabled": False})
    # The daemon's next poll writes enabled=True in its copy: the operator's switch wins.
    later = status.model_copy(
        update={"reachability": ClusterReachability.NEEDS_AUTH, "last_error": "key rejected"}
    )
    stored = await call(store.upsert_cluster_status(later))
    assert stored.enabled is False
    assert await call(store.get_cluster_status("clusterA")) == stored

    # set_cluster_enabled creates a row for a cluster never polled.
    created = await call(store.set_cluster_enabled("clusterB", False))
    assert created == ClusterStatus(name="clusterB", enabled=False)
    listed = await call(store.list_cluster_status())
    assert [(c.name, c.enabled) for c in listed] == [("clusterA", False), ("clusterB", False)]
    await call(store.set_cluster_enabled("clusterA", True))
    assert (await call(store.get_cluster_status("clusterA"))).enabled is True


async def test_daemon_status_is_a_single_row(store: Store) -> None:
    assert await call(store.get_daemon_status()) is None
    status = DaemonStatus(pid=123, hostname="ws", started_at=T0, version="0.1.0")
    await call(store.set_daemon_status(status))
    assert await call(store.get_daemon_status()) == status
    later = status.model_copy(update={"cycles": 5, "last_cycle_at": T0 + timedelta(minutes=1)})
    await call(store.set_daemon_status(later))
    assert await call(store.get_daemon_status()) == later


async def test_status_summary_aggregates_everything(store: Store) -> None:
    jobs = [
        make_job("r1", state=JobState.RUNNING, ns_per_day=12.5),
        make_job("r2", state=JobState.RUNNING, ns_per_day=7.5),
        make_job("r3", state=JobState.RUNNING),  # no rate reported yet
        make_job("q1"),
        make_job("c1", state=JobState.COMPLETED, ns_per_day=99.0),  # not running: not summed
    ]
    for job in jobs:
        await call(store.insert_job(job))
    allocations = [
        make_allocation("a1", state=AllocationState.RUNNING),
        make_allocation("a2", state=AllocationState.RUNNING),
        make_allocation("a3", state=AllocationState.PENDING),
        make_allocation("b1", cluster="clusterB", state=AllocationState.ENDED),
    ]
    for a in allocations:
        await call(store.insert_allocation(a))
    await call(store.set_cluster_enabled("clusterB", False))
    daemon = DaemonStatus(pid=1, hostname="ws", started_at=T0, version="0.1.0")
    await call(store.set_daemon_status(daemon))

    summary = await call(store.status_summary())
    assert summary.jobs[JobState.RUNNING] == 3
    assert summary.jobs[JobState.QUEUED] == 1
    assert summary.jobs[JobState.FAILED] == 0
    assert (summary.total_jobs, summary.running_jobs) == (5, 3)
    assert summary.running_ns_per_day == pytest.approx(20.0)
    assert summary.allocations_on("clusterA") == {
        AllocationState.PENDING: 1,
        AllocationState.RUNNING: 2,
    }
    assert summary.allocations_on("clusterB") == {AllocationState.ENDED: 1}
    assert [c.name for c in summary.clusters] == ["clusterB"]
    assert summary.daemon == daemon


async def test_status_summary_of_an_empty_store(store: Store) -> None:
    summary = await call(store.status_summary())
    assert summary.total_jobs == 0
    assert summary.jobs == dict.fromkeys(JobState, 0)
    assert (summary.allocations, summary.clusters, summary.daemon) == ([], [], None)
    assert summary.running_ns_per_day == 0.0


async def test_data_survives_reopening_with_the_other_front_end(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    async with await AsyncStateStore.open(path) as daemon_side:
        await daemon_side.insert_job(make_job("j1"))
        assert await advance_epoch(daemon_side, "j1") == 1
    with StateStore.open(path) as cli_side:
        job = cli_side.get_job("j1")
        assert job is not None
        assert job.epoch == 1
