"""The fencing token has one source: the epoch `decide` chose, committed by compare-and-set.

Two daemons' cycles (two connections to one SQLite file) decide from the same row to bind
job j1 at epoch 1, to different allocations. The first commits; the second's commit must
fail as a whole, leaving the first's binding in the file, and neither decision is changed
by persisting it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from relaymd.daemon.commit import persist
from relaymd.daemon.decide import CycleDecisions
from relaymd.models import Job, JobState, Segment
from relaymd.state import AsyncStateStore, ConflictError
from tests.daemon.daemon_factories import T0, make_alloc, make_job


def bind(read: Job, alloc_id: str) -> CycleDecisions:
    """What `decide` returns when it binds `read` (epoch 0) to `alloc_id`."""
    job = read.model_copy(
        update={"state": JobState.ASSIGNED, "epoch": 1, "allocation_id": alloc_id}
    )
    return CycleDecisions(
        jobs={job.id: job},
        bound=[job.id],
        allocations={alloc_id: make_alloc(alloc_id, job_id=job.id)},
        new_segments=[
            Segment(
                job_id=job.id,
                epoch=1,
                allocation_id=alloc_id,
                cluster="c1",
                start_step=0,
                started_at=T0,
            )
        ],
    )


async def test_a_stale_writer_commits_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    async with (
        await AsyncStateStore.open(path) as first,
        await AsyncStateStore.open(path) as second,
    ):
        await first.insert_job(make_job("j1"))
        for alloc_id in ("a1", "a2"):
            await first.insert_allocation(make_alloc(alloc_id))
        read = await first.get_job("j1")
        assert read is not None and read.epoch == 0
        winner, loser = bind(read, "a1"), bind(read, "a2")
        before = loser.model_copy(deep=True)

        async with first.transaction():
            await persist(first, "c1", {"j1": read}, winner)
        with pytest.raises(ConflictError):
            async with second.transaction():
                await persist(second, "c1", {"j1": read}, loser)
        assert loser == before  # persisting never rewrites a decision
        assert winner.jobs["j1"].epoch == 1 and winner.new_segments[0].epoch == 1

    with sqlite3.connect(path) as db:
        job = db.execute("SELECT epoch, allocation_id, state FROM jobs").fetchall()
        segments = db.execute("SELECT job_id, epoch, allocation_id FROM segments").fetchall()
        allocs = db.execute("SELECT id, job_id FROM allocations ORDER BY id").fetchall()
    assert job == [(1, "a1", "assigned")]
    assert segments == [("j1", 1, "a1")]
    assert allocs == [("a1", "j1"), ("a2", None)]


async def test_a_refused_commit_is_a_failed_poll_of_a_reachable_cluster(tmp_path: Path) -> None:
    """A conflict rolls the cycle back; the cluster's status row says why, and it stays
    reachable (the login node answered) rather than reading as a network problem."""
    from relaymd.daemon.poll_outcome import PollOutcome
    from relaymd.models import utcnow
    from tests.daemon.daemon_factories import make_profile
    from tests.support.fake_cluster import make_fake_runners

    fake = await make_fake_runners(tmp_path, {"c1": make_profile("c1")})
    try:
        outcome = PollOutcome(fake.ctx, fake.ctx.profiles["c1"])
        refused = ConflictError("job j1 is at epoch 2, not 1")
        await outcome.failed(refused, utcnow(), interval_s=5.0)
    finally:
        await fake.store.close()
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        row = db.execute("SELECT reachability, data FROM clusters WHERE name = 'c1'").fetchone()
    assert row[0] == "reachable"
    assert "job j1 is at epoch 2, not 1" in row[1]
