"""GPU slots through the daemon's real cluster runner (ADR 0026): real bash against real
mailbox folders, the scheduler's queue as a file (tests.support.fake_cluster), real SQLite.

The workers' side is written by hand (heartbeats, events, the supervisor's `slot_exited`);
verdicts come from the queue file, the mailbox files and the state file read with sqlite3.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.models import AllocationState, utcnow
from tests.daemon.daemon_factories import make_job
from tests.support.fake_cluster import local_profile, make_fake_runners
from tests.support.slot_rows import slot_row


def _rows(tmp: Path) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(tmp / "state.sqlite") as db:
        rows = db.execute("SELECT id, data FROM allocations").fetchall()
    return {row_id: json.loads(data) for row_id, data in rows}


def _job(tmp: Path, job_id: str) -> dict[str, Any]:
    with sqlite3.connect(tmp / "state.sqlite") as db:
        (data,) = db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return dict(json.loads(data))


def _folder(tmp: Path, alloc_id: str) -> Path:
    return tmp / "scratch" / "alloc" / alloc_id


def _beat(tmp: Path, alloc_id: str, seq: int, state: WorkerState, **fields: Any) -> None:
    beat = Heartbeat(allocation_id=alloc_id, seq=seq, state=state, **fields)
    folder = _folder(tmp, alloc_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "heartbeat.json").write_text(beat.model_dump_json())


def _event(tmp: Path, alloc_id: str, kind: EventKind, **fields: Any) -> None:
    line = WorkerEvent(kind=kind, allocation_id=alloc_id, **fields).model_dump_json()
    with open(_folder(tmp, alloc_id) / "events.jsonl", "a") as fh:
        fh.write(line + "\n")


def _control(tmp: Path, alloc_id: str) -> dict[str, Any] | None:
    path = _folder(tmp, alloc_id) / "control.json"
    return dict(json.loads(path.read_text())) if path.exists() else None


def _queue(tmp: Path) -> str:
    return (tmp / "scratch" / "queue").read_text()


async def test_a_four_gpu_group_is_submitted_once_and_its_slots_live_and_end_alone(
    tmp_path: Path,
) -> None:
    scratch = tmp_path / "scratch"
    profile = local_profile(
        "c1", scratch, gpus_per_allocation=4, max_pending=1, max_running=2, walltime_minutes=30
    )
    fake = await make_fake_runners(tmp_path, {"c1": profile})
    runner, store = fake.runners["c1"], fake.store
    try:
        for i in range(3):
            await store.insert_job(make_job(f"j{i}", created_s=i))
        # Three one-GPU jobs meet min_fill (3 of 4): one group of four slot rows, one submit.
        assert (await runner.cycle()).ok
        rows = _rows(tmp_path)
        [group] = {r["group_id"] for r in rows.values()}
        assert sorted(rows) == [f"{group}-g{i}" for i in range(4)]
        assert {r["slot_count"] for r in rows.values()} == {4}
        [line] = _queue(tmp_path).splitlines()
        assert line.split()[0] == group  # the scheduler knows the group id only
        sid = line.split()[1]
        assert {r["state"] for r in rows.values()} == {"pending"}
        assert {r["scheduler_id"] for r in rows.values()} == {sid}
        assert (_folder(tmp_path, f"{group}-g0") / "job.sh").is_file()
        for i in range(4):
            assert (_folder(tmp_path, f"{group}-g{i}") / "credentials").is_file()
            assert not (_folder(tmp_path, f"{group}-g{i}") / "job.sh").exists() or i == 0

        # SLURM starts the group; each slot's worker reports idle: three jobs, three slots.
        (scratch / "queue").write_text(f"{group} {sid} running\n")
        # The slots share the group's walltime end, before any job could hand off to them.
        deadline = utcnow() + timedelta(minutes=20)
        for i in range(4):
            _beat(tmp_path, f"{group}-g{i}", 1, WorkerState.IDLE, deadline=deadline)
        assert (await runner.cycle()).ok
        rows = _rows(tmp_path)
        assert {r["state"] for r in rows.values()} == {"running"}
        bound = {a: r["job_id"] for a, r in rows.items() if r["job_id"]}
        assert sorted(bound.values()) == ["j0", "j1", "j2"]
        for alloc_id, job_id in bound.items():
            written = json.loads((_folder(tmp_path, alloc_id) / "assignment.json").read_text())
            assert written["job_id"] == job_id and written["devices"] == []
        [spare] = set(rows) - set(bound)
        # The fourth slot has no work: released like any idle worker, by a stop control.
        assert _control(tmp_path, spare)["action"] == "stop"  # type: ignore[index]

        # The released slot's worker leaves; the supervisor reports its exit: that row ends
        # alone, nothing is cancelled, the other three run on.
        _event(tmp_path, spare, EventKind.IDLE_EXIT)
        _event(tmp_path, spare, EventKind.SLOT_EXITED, exit_code=0)
        for alloc_id, job_id in bound.items():
            epoch = _job(tmp_path, job_id)["epoch"]
            _beat(tmp_path, alloc_id, 2, WorkerState.RUNNING, job_id=job_id, epoch=epoch)
        assert (await runner.cycle()).ok
        rows = _rows(tmp_path)
        assert rows[spare]["state"] == "ended"
        assert {rows[a]["state"] for a in bound} == {"running"}
        assert _queue(tmp_path).split()[:3] == [group, sid, "running"]

        # One slot hangs: told to stop long ago, still silent. The group's other slots work,
        # so that slot alone gets a `kill` (no scancel) and its job is requeued.
        hung = sorted(bound)[0]
        row = await store.get_allocation(hung)
        assert row is not None
        long_ago = utcnow() - timedelta(hours=1)
        await store.update_allocation(
            row.model_copy(update={"stop_requested_at": long_ago, "seq_changed_at": long_ago})
        )
        assert (await runner.cycle()).ok
        assert _control(tmp_path, hung)["action"] == "kill"  # type: ignore[index]
        assert _queue(tmp_path).split()[:3] == [group, sid, "running"]
        assert _job(tmp_path, bound[hung])["state"] == "queued"
        _event(tmp_path, hung, EventKind.SLOT_EXITED, exit_code=-9)
        assert (await runner.cycle()).ok
        rows = _rows(tmp_path)
        assert rows[hung]["state"] == "ended"
        assert [a for a in bound if rows[a]["state"] == "running"] == sorted(bound)[1:]

        # SLURM ends the group: every remaining slot ends with it, their jobs requeued (no
        # worker event explains the end), and those three jobs ask for a new group.
        (scratch / "queue").write_text(f"{group} {sid} ended COMPLETED\n")
        assert (await runner.cycle()).ok
        rows = _rows(tmp_path)
        assert {r["state"] for r in rows.values() if r["group_id"] == group} == {"ended"}
        assert {_job(tmp_path, j)["state"] for j in ("j0", "j1", "j2")} == {"queued"}
        assert len({r["group_id"] for r in rows.values()}) == 2
    finally:
        await store.close()


async def test_a_two_gpu_job_takes_a_lead_and_a_held_slot_freed_when_it_leaves(
    tmp_path: Path,
) -> None:
    scratch = tmp_path / "scratch"
    profile = local_profile("c1", scratch, gpus_per_allocation=4, walltime_minutes=30)
    fake = await make_fake_runners(tmp_path, {"c1": profile})
    runner, store = fake.runners["c1"], fake.store
    try:
        now = utcnow()
        for i in range(4):
            await store.insert_allocation(
                slot_row(
                    "g1",
                    i,
                    cluster="c1",
                    partition="p1",
                    state=AllocationState.RUNNING,
                    scheduler_id="100",
                    walltime_s=1800,
                    started_at=now,
                )
            )
            _beat(tmp_path, f"g1-g{i}", 1, WorkerState.IDLE)
        (scratch / "queue").write_text("g1 100 running\n")
        await store.insert_job(make_job("j1", gpus=2))
        await store.insert_job(make_job("j2", gpus=1, created_s=1))
        assert (await runner.cycle()).ok
        rows = _rows(tmp_path)
        # The 2-GPU job leads on slot 0 with slot 1 held; the 1-GPU job takes slot 2.
        assert rows["g1-g0"]["job_id"] == "j1" and rows["g1-g1"]["held_by"] == "g1-g0"
        assert rows["g1-g2"]["job_id"] == "j2" and rows["g1-g2"]["held_by"] is None
        lead = json.loads((_folder(tmp_path, "g1-g0") / "assignment.json").read_text())
        assert lead["job_id"] == "j1" and lead["devices"] == [0, 1]
        assert _control(tmp_path, "g1-g1")["action"] == "hold"  # type: ignore[index]
        assert not (_folder(tmp_path, "g1-g1") / "assignment.json").exists()

        # The held worker obeys; the lead's job fails retryably (it leaves the lead): the held
        # slot is freed in that same cycle and its hold control removed.
        epoch = _job(tmp_path, "j1")["epoch"]
        _beat(tmp_path, "g1-g0", 2, WorkerState.RUNNING, job_id="j1", epoch=epoch)
        _beat(tmp_path, "g1-g1", 2, WorkerState.HELD)
        assert (await runner.cycle()).ok
        assert _rows(tmp_path)["g1-g1"]["held_by"] == "g1-g0"  # held heartbeats keep it alive
        assert _rows(tmp_path)["g1-g1"]["state"] == "running"
        _event(
            tmp_path,
            "g1-g0",
            EventKind.FAILED,
            job_id="j1",
            epoch=epoch,
            retryable=True,
            reason="lost upload",
        )
        assert (await runner.cycle()).ok
        rows = _rows(tmp_path)
        assert rows["g1-g0"]["job_id"] is None and rows["g1-g1"]["held_by"] is None
        assert _control(tmp_path, "g1-g1") is None
        assert _job(tmp_path, "j1")["state"] == "queued"
    finally:
        await store.close()
