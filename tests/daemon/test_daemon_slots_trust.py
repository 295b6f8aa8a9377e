"""GPU slots against what the daemon must not take on trust (ADR 0026): a group submitted only
when every slot's folder was written, a `slot_exited` line the group's state makes impossible.

Real bash against real mailbox folders, the scheduler's queue as a file
(tests.support.fake_cluster), real SQLite; verdicts from the queue file, the folders and the
state file read with sqlite3.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from relaymd.mailbox.daemon_files import assignment_file
from relaymd.mailbox.models import EventKind, WorkerState
from relaymd.models import AllocationState, utcnow
from relaymd.state import AsyncStateStore, StateStore
from relaymd.state.usage import job_usage
from relaymd.views.snapshot import take_snapshot
from tests.daemon.daemon_factories import make_job
from tests.daemon.test_daemon_slots import _beat, _event, _folder, _job, _rows
from tests.support.fake_cluster import local_profile, make_fake_runners
from tests.support.slot_rows import slot_row


async def test_a_group_is_not_submitted_when_one_slot_folder_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    profile = local_profile("c1", scratch, gpus_per_allocation=4, max_pending=1)
    fake = await make_fake_runners(tmp_path, {"c1": profile})
    runner, store = fake.runners["c1"], fake.store
    ids = iter(f"a{i}grp" for i in range(10))
    monkeypatch.setattr("relaymd.daemon.commit.new_allocation_id", lambda: next(ids))
    # Slot 2's folder cannot be made: a plain file sits where it belongs.
    (scratch / "alloc").mkdir(parents=True)
    (scratch / "alloc" / "a0grp-g2").write_text("not a folder")
    try:
        for i in range(3):
            await store.insert_job(make_job(f"j{i}", created_s=i))
        assert (await runner.cycle()).ok
        # No SLURM job: its slot 2 would run a worker without a mailbox or credentials.
        queue = scratch / "queue"
        assert not queue.exists() or queue.read_text() == ""
        rows = _rows(tmp_path)
        assert sorted(rows) == [f"a0grp-g{i}" for i in range(4)]
        assert {r["state"] for r in rows.values()} == {"ended"}
        # Nothing half-written: the credentials of the slots that were written are removed
        # (the next cycle also provisions a new group, whose folders can be written).
        assert (await runner.cycle()).ok
        assert queue.read_text().split()[:3] == ["a1grp", "1000", "pending"]
        for i in (0, 1, 3):
            assert not (_folder(tmp_path, f"a0grp-g{i}") / "credentials").exists()
    finally:
        await store.close()


async def _group(store: AsyncStateStore, state: AllocationState, count: int = 2) -> None:
    now = utcnow()
    for i in range(count):
        await store.insert_allocation(
            slot_row(
                "g1",
                i,
                cluster="c1",
                partition="p1",
                slot_count=count,
                walltime_s=1800,
                state=state,
                scheduler_id="100",
                started_at=now if state is AllocationState.RUNNING else None,
            )
        )


async def test_a_slot_exited_line_of_a_group_not_started_ends_nothing(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    profile = local_profile("c1", scratch, gpus_per_allocation=2)
    fake = await make_fake_runners(tmp_path, {"c1": profile})
    runner, store = fake.runners["c1"], fake.store
    try:
        await _group(store, AllocationState.PENDING)
        await store.insert_job(make_job("j1", gpus=2))  # the pending group is its supply
        (scratch / "queue").write_text("g1 100 pending\n")
        # No supervisor runs before SLURM starts the group: this line is forged or stale.
        _folder(tmp_path, "g1-g1").mkdir(parents=True)
        _event(tmp_path, "g1-g1", EventKind.SLOT_EXITED, exit_code=0)
        assert (await runner.cycle()).ok
        assert _rows(tmp_path)["g1-g1"]["state"] == "pending"
        # SLURM starts it: the slot lives and takes work like its sibling.
        (scratch / "queue").write_text("g1 100 running\n")
        for i in range(2):
            _beat(tmp_path, f"g1-g{i}", 1, WorkerState.IDLE)
        assert (await runner.cycle()).ok
        rows = _rows(tmp_path)
        assert rows["g1-g1"]["state"] == "running" and rows["g1-g1"]["held_by"] == "g1-g0"
        assert _job(tmp_path, "j1")["allocation_id"] == "g1-g0"
    finally:
        await store.close()


async def test_a_held_slots_gpu_time_counts_for_the_lead_job_not_as_idle(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    profile = local_profile("c1", scratch, gpus_per_allocation=2)
    fake = await make_fake_runners(tmp_path, {"c1": profile})
    runner, store = fake.runners["c1"], fake.store
    try:
        await _group(store, AllocationState.RUNNING)
        (scratch / "queue").write_text("g1 100 running\n")
        for i in range(2):
            _beat(tmp_path, f"g1-g{i}", 1, WorkerState.IDLE)
        await store.insert_job(make_job("j1", gpus=2))
        assert (await runner.cycle()).ok
        assert _rows(tmp_path)["g1-g1"]["held_by"] == "g1-g0"
        # SLURM ends the group while j1 runs: both slots' time was j1's.
        (scratch / "queue").write_text("g1 100 ended COMPLETED\n")
        assert (await runner.cycle()).ok
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        rows = db.execute("SELECT data FROM allocations WHERE id LIKE 'g1-g%'").fetchall()
        (segment,) = db.execute("SELECT data FROM segments WHERE job_id = 'j1'").fetchone()
    assert json.loads(segment)["held_allocation_ids"] == ["g1-g1"]
    spans = []
    for (data,) in rows:
        row = json.loads(data)
        start, end = (datetime.fromisoformat(row[k]) for k in ("started_at", "ended_at"))
        spans.append((end - start).total_seconds())
    with StateStore.open(tmp_path / "state.sqlite") as state:
        now = utcnow()
        usage = job_usage(state, "j1", now)
        # The report of that job (`relaymd report --job j1`) counts both slots too.
        reported = take_snapshot(state, now, ["j1"]).usage_by_cluster["c1"]
    # Every second of both slots is j1's (start-up, simulating or tail), none unattributed.
    assert usage.allocated_gpu_s == pytest.approx(sum(spans))
    assert usage.simulating_gpu_s > 0
    assert reported.allocated_gpu_s == pytest.approx(sum(spans))


async def test_a_slot_taken_as_held_loses_an_assignment_its_worker_had_not_read(
    tmp_path: Path,
) -> None:
    """A withdrawn successor's pre-written assignment stays in the folder while the worker has
    not read it (its heartbeat still says idle). Held, that worker must not run it later on
    the GPU the lead's engine uses."""
    scratch = tmp_path / "scratch"
    profile = local_profile("c1", scratch, gpus_per_allocation=2)
    fake = await make_fake_runners(tmp_path, {"c1": profile})
    runner, store = fake.runners["c1"], fake.store
    try:
        await _group(store, AllocationState.RUNNING)
        (scratch / "queue").write_text("g1 100 running\n")
        for i in range(2):
            _beat(tmp_path, f"g1-g{i}", 1, WorkerState.IDLE)
        slot1 = await store.get_allocation("g1-g1")
        stale = assignment_file(slot1, make_job("j0", epoch=3))
        (_folder(tmp_path, "g1-g1") / "assignment.json").write_bytes(stale.data)
        await store.insert_job(make_job("j1", gpus=2))
        assert (await runner.cycle()).ok
        assert _rows(tmp_path)["g1-g1"]["held_by"] == "g1-g0"
        assert (
            json.loads((_folder(tmp_path, "g1-g1") / "control.json").read_text())["action"]
            == "hold"
        )
        assert not (_folder(tmp_path, "g1-g1") / "assignment.json").exists()
    finally:
        await store.close()
