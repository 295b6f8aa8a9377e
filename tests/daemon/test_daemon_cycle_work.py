"""A cycle's decide work per allocation: what changed is copied once, and searches that
cannot find anything are not run (counts, never times).

The real ClusterRunner over the real local transport and a real SQLite file, as in
test_daemon_cycle_scale; the rows written are counted by SQLite's own triggers there.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from relaymd.daemon.decide import heartbeats, warm
from relaymd.mailbox import reading
from relaymd.models import Job
from relaymd.models.base import copy_with
from tests.daemon.test_daemon_cycle_scale import Campaign


async def test_a_moved_heartbeat_copies_its_job_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    campaign = Campaign(tmp_path, running=30, queued=10)
    runner, store = await campaign.start(tmp_path, write_every=1)
    copies = Counter[str]()
    model_copy = Job.model_copy

    def counted(self: Job, *args: Any, **kwargs: Any) -> Job:
        copies[self.id] += 1
        return model_copy(self, *args, **kwargs)

    def counted_with(model: Any, update: Any) -> Any:  # the heartbeat path's copy (ADR 0029)
        if isinstance(model, Job):
            copies[model.id] += 1
        return copy_with(model, update)

    try:
        await campaign.cycle(runner, store)
        await campaign.cycle(runner, store)
        monkeypatch.setattr(Job, "model_copy", counted)
        monkeypatch.setattr(heartbeats, "copy_with", counted_with)
        for i in range(10):
            campaign.beat(i, ns_per_day=150.0)  # the speed moved: the job row changes
        _, writes = await campaign.cycle(runner, store)
        assert writes == Counter(allocations=10, jobs=10)
        # One copy of each changed job (its new speed and `updated_at` together), none of
        # the others.
        assert copies == Counter({f"j{i:05d}": 1 for i in range(10)})
        async with store._conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE json_extract(data, '$.ns_per_day') = 150.0"
        ) as cursor:
            assert (await cursor.fetchone()) == (10,)
    finally:
        await store.close()


@pytest.mark.parametrize("room", [0, 5], ids=["cluster full", "room to submit"])
async def test_no_successor_search_without_an_idle_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int
) -> None:
    """Every allocation runs a job: no reservation can be made, so reserve_successors looks
    at no job. Provisioning's demand looks at each job once while the cluster has room to
    submit, and not at all when it is full (nothing it found could be met here)."""
    campaign = Campaign(tmp_path, running=30, queued=10)
    campaign.profile.partitions[0].max_running += room
    campaign.profile.partitions[0].max_pending += room
    runner, store = await campaign.start(tmp_path)
    calls = Counter[str]()
    handoff_within = warm._handoff_within

    def counted(cycle: Any, job: Job, *args: Any) -> Any:
        calls[job.id] += 1
        return handoff_within(cycle, job, *args)

    try:
        await campaign.cycle(runner, store)
        monkeypatch.setattr(warm, "_handoff_within", counted)
        for i in range(30):
            campaign.beat(i)
        await campaign.cycle(runner, store)
        if room:
            assert calls, "provisioning asks which running jobs hand off soon"
            assert max(calls.values()) == 1, calls
        else:
            assert not calls, calls
    finally:
        await store.close()


async def test_a_quiet_allocation_builds_no_files_and_checks_no_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only what changed is worked on (ADR 0030): an allocation that brought nothing new gets
    its last AllocationFiles back, and a heartbeat whose seq did not move is not checked
    against the binding again."""
    campaign = Campaign(tmp_path, running=30, queued=10)
    runner, store = await campaign.start(tmp_path, write_every=1)
    built = Counter[str]()
    checked = Counter[str]()
    build_files = reading._build_files
    heartbeat_counts = heartbeats.heartbeat_counts

    def counted_build(req: Any, *args: Any) -> Any:
        built[req.allocation_id] += 1
        return build_files(req, *args)

    def counted_check(alloc_id: str, *args: Any) -> bool:
        checked[alloc_id] += 1
        return heartbeat_counts(alloc_id, *args)

    try:
        for i in range(30):
            campaign.beat(i)
        await campaign.cycle(runner, store)
        await campaign.cycle(runner, store)
        monkeypatch.setattr(reading, "_build_files", counted_build)
        monkeypatch.setattr(heartbeats, "heartbeat_counts", counted_check)
        await campaign.cycle(runner, store)
        assert not built and not checked
        moved = [campaign.alloc_id(i) for i in range(3)]
        for i in range(3):
            campaign.beat(i)
        await campaign.cycle(runner, store)
        assert built == Counter(moved) and checked == Counter(moved)
        async with store._conn.execute(
            "SELECT json_extract(data, '$.last_seq') FROM allocations WHERE id = ?", (moved[0],)
        ) as cursor:
            stored = await cursor.fetchone()
        assert stored == (campaign.seq[moved[0]],)  # the moved seq was noted and written
    finally:
        await store.close()
