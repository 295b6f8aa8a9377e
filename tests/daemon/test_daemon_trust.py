"""The daemon verifies what a worker reports (issue 12, items 1-4 and credentials cleanup).

A real cluster runner: the real read/write scripts through the real local transport, a real
SQLite file, checkpoints in a real file:// store. Verdicts come from the bytes in storage,
the state file read with plain sqlite3, and the files left on "scratch".
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from relaymd.daemon.decide import decide_cycle
from relaymd.daemon.decide.decisions import DecideInput
from relaymd.daemon.provision import ClusterMode
from relaymd.mailbox.carrier import AllocationFiles, ClusterSnapshot
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.models import (
    Allocation,
    AllocationState,
    CheckpointRef,
    ClusterProfile,
    DaemonSettings,
    JobState,
    StorageAccess,
)
from relaymd.storage.checkpoints import upload_checkpoint
from relaymd.storage.keys import checkpoints_prefix
from relaymd.transport import CommandResult
from tests.daemon.daemon_factories import T0, make_alloc, make_job, make_profile, sched_job
from tests.support.fake_cluster import BashTransport, local_profile, make_fake_runners
from tests.support.worker_mailbox import WorkerMailbox


class SizedTransport(BashTransport):
    """Also records how many bytes each script sent back."""

    def __init__(self, profile: ClusterProfile) -> None:
        super().__init__(profile)
        self.replies: list[int] = []

    async def run(self, script: str, *, timeout: float | None = None) -> CommandResult:  # noqa: ASYNC109
        result = await super().run(script, timeout=timeout)
        self.replies.append(len(result.stdout.encode()))
        return result


class Bench(WorkerMailbox):
    """Job j1 running at epoch 2 on allocation a1, its pointer at checkpoint 2-1 (step 10);
    job j2 held, with checkpoints of its own."""

    def __init__(self, tmp_path: Path, fake: Any, transport: SizedTransport) -> None:
        super().__init__(tmp_path, fake.ctx.object_store)
        self.fake = fake
        self.store = fake.store
        self.runner = fake.runners["c1"]
        self.transport = transport

    def checkpoint(self, job: str, epoch: int, seq: int, step: int) -> CheckpointRef:
        return self.upload_state(job, epoch, seq, step, f"{job} {epoch} {seq} {step}".encode())

    def beat(self, job: str | None = "j1", epoch: int | None = 2) -> None:
        self.seq += 1
        state = WorkerState.RUNNING if job else WorkerState.IDLE
        beat = Heartbeat(allocation_id="a1", seq=self.seq, state=state, job_id=job, epoch=epoch)
        (self.folder / "heartbeat.json").write_text(beat.model_dump_json())

    async def cycle(self) -> None:
        self.beat()
        report = await self.runner.cycle()
        assert report.ok, report.error

    # -- independent views ---------------------------------------------------------------
    def stored(self, job_id: str = "j1") -> set[str]:
        """<epoch>-<seq> of every checkpoint whose manifest is in storage."""
        root = self.tmp / "storage" / checkpoints_prefix(job_id)
        return {p.parent.name for p in root.glob("*/manifest.json")}


@pytest.fixture
async def bench(tmp_path: Path):
    profile = local_profile("c1", tmp_path / "scratch", max_pending=1, max_running=4)
    fake = await make_fake_runners(tmp_path, {"c1": profile})
    transport = SizedTransport(profile)
    fake.runners["c1"]._transport_factory = lambda *a, **k: transport
    b = Bench(tmp_path, fake, transport)
    pointer = b.checkpoint("j1", 2, 1, 10)
    await b.store.insert_job(
        make_job(
            "j1",
            state=JobState.RUNNING,
            epoch=2,
            allocation_id="a1",
            checkpoint=pointer,
            max_retries=0,
        )
    )
    await b.store.insert_job(make_job("j2", state=JobState.HELD, epoch=2))
    await b.insert_running_a1(b.store)
    (b.folder / "credentials").write_text("{}")
    try:
        yield b
    finally:
        await b.store.close()


def pointer_of(row: dict[str, Any]) -> tuple[str, int, int, int]:
    ref = row["checkpoint"]
    return ref["prefix"], ref["epoch"], ref["seq"], ref["step"]


# -- item 1: a reported checkpoint must be the job's own, of the current epoch, advancing --


async def test_another_jobs_checkpoint_never_becomes_the_pointer(bench: Bench) -> None:
    bench.checkpoint("j1", 2, 2, 20)
    bench.checkpoint("j1", 2, 3, 30)
    foreign = bench.checkpoint("j2", 2, 5, 50)
    bench.event(EventKind.CHECKPOINT, step=50, checkpoint=foreign)
    await bench.cycle()
    assert pointer_of(bench.job_row()) == ("jobs/j1/checkpoints/2-1/", 2, 1, 10)
    # Nothing of either job was deleted by retention.
    assert bench.stored("j1") == {"2-1", "2-2", "2-3"}
    assert bench.stored("j2") == {"2-5"}
    assert any(kind == "checkpoint_rejected" and "jobs/j2/" in msg for kind, msg in bench.audits())
    # The job's own next checkpoint is still accepted.
    own = bench.checkpoint("j1", 2, 4, 40)
    bench.event(EventKind.CHECKPOINT, step=40, checkpoint=own)
    await bench.cycle()
    assert pointer_of(bench.job_row()) == ("jobs/j1/checkpoints/2-4/", 2, 4, 40)


async def test_an_absurd_seq_does_not_freeze_the_pointer(bench: Bench) -> None:
    real = bench.checkpoint("j1", 2, 2, 20)
    third = bench.checkpoint("j1", 2, 3, 30)
    forged = real.model_copy(update={"seq": 10**9})
    bench.event(EventKind.CHECKPOINT, step=20, checkpoint=forged)
    await bench.cycle()
    assert pointer_of(bench.job_row())[2] == 1
    assert bench.stored("j1") == {"2-1", "2-2", "2-3"}
    assert any(kind == "checkpoint_rejected" for kind, _ in bench.audits())
    bench.event(EventKind.CHECKPOINT, step=20, checkpoint=real)
    bench.event(EventKind.CHECKPOINT, step=30, checkpoint=third)
    await bench.cycle()
    assert pointer_of(bench.job_row()) == ("jobs/j1/checkpoints/2-3/", 2, 3, 30)
    fallbacks = [f["seq"] for f in bench.job_row()["fallbacks"]]
    assert fallbacks == [2, 1]


@pytest.mark.parametrize(
    "case",
    ["step_disagrees", "seq_repeats", "step_goes_back", "old_epoch_ref", "epoch_disagrees"],
)
async def test_a_claim_the_manifest_or_the_pointer_contradicts_is_rejected(
    bench: Bench, case: str
) -> None:
    if case == "step_disagrees":
        real = bench.checkpoint("j1", 2, 2, 20)
        claim = real.model_copy(update={"step": 90})
    elif case == "seq_repeats":
        pointer = (await bench.store.get_job("j1")).checkpoint
        claim = pointer.model_copy(update={"step": 60})  # the pointer's seq, reported again
    elif case == "step_goes_back":
        claim = bench.checkpoint("j1", 2, 2, 5)
    elif case == "old_epoch_ref":
        claim = bench.checkpoint("j1", 1, 7, 70)
    else:
        # A manifest written under 2-2 that says it is epoch 1.
        real = bench.checkpoint("j1", 1, 2, 20)
        prefix = "jobs/j1/checkpoints/2-2/"
        manifest = bench.objects.get_bytes(real.prefix + "manifest.json")
        bench.objects.put_bytes(
            prefix + "state.bin", bench.objects.get_bytes(real.prefix + "state.bin")
        )
        put = bench.objects.put_bytes(prefix + "manifest.json", manifest)
        claim = CheckpointRef(epoch=2, seq=2, step=20, prefix=prefix, manifest_sha256=put.sha256)
    bench.event(EventKind.CHECKPOINT, step=claim.step, checkpoint=claim)
    await bench.cycle()
    assert pointer_of(bench.job_row()) == ("jobs/j1/checkpoints/2-1/", 2, 1, 10)
    assert "2-1" in bench.stored("j1")
    assert [k for k, _ in bench.audits() if k == "checkpoint_rejected"]


# -- item 3: completion needs a verified final checkpoint ---------------------------------


async def test_completed_without_a_final_checkpoint_is_not_completion(bench: Bench) -> None:
    bench.event(EventKind.COMPLETED, step=5)
    await bench.cycle()
    row = bench.job_row()
    assert row["state"] == "running" and row["allocation_id"] == "a1"
    assert any(kind == "completion_rejected" for kind, _ in bench.audits())
    # The allocation then ends: the job resumes from its pointer, nothing lost.
    bench.queue("a1 100 ended COMPLETED")
    await bench.cycle()
    row = bench.job_row()
    assert row["state"] == "queued" and row["step"] == 10
    assert pointer_of(row) == ("jobs/j1/checkpoints/2-1/", 2, 1, 10)


async def test_completed_short_of_total_steps_is_not_completion(bench: Bench) -> None:
    ref = bench.checkpoint("j1", 2, 2, 50)
    bench.event(EventKind.CHECKPOINT, step=50, checkpoint=ref)
    bench.event(EventKind.COMPLETED, step=50, checkpoint=ref)
    await bench.cycle()
    row = bench.job_row()
    assert row["state"] == "running" and pointer_of(row)[2] == 2


async def test_completed_with_a_verified_final_checkpoint_completes(bench: Bench) -> None:
    ref = bench.checkpoint("j1", 2, 2, 100)
    bench.event(EventKind.CHECKPOINT, step=100, checkpoint=ref)
    bench.event(EventKind.COMPLETED, step=100, checkpoint=ref)
    await bench.cycle()
    row = bench.job_row()
    assert row["state"] == "completed" and row["step"] == 100
    assert pointer_of(row) == ("jobs/j1/checkpoints/2-2/", 2, 2, 100)
    assert "2-2" in bench.stored("j1")


async def test_completed_naming_an_unverifiable_checkpoint_is_not_completion(
    bench: Bench,
) -> None:
    ref = bench.checkpoint("j1", 2, 2, 100)
    forged = ref.model_copy(update={"manifest_sha256": "f" * 64})
    bench.event(EventKind.COMPLETED, step=100, checkpoint=forged)
    await bench.cycle()
    assert bench.job_row()["state"] == "running"


# -- item 2: an oversized line is skipped and counted; every read is capped ---------------


async def test_a_2mb_event_line_is_skipped_and_the_real_failure_is_seen(bench: Bench) -> None:
    bench.event(EventKind.STARTED, step=10)
    huge = WorkerEvent(
        kind=EventKind.FAILED,
        allocation_id="a1",
        job_id="j1",
        epoch=2,
        reason="x" * (2 << 20),
    )
    bench.append(huge.model_dump_json().encode() + b"\n")
    bench.event(EventKind.FAILED, step=10, reason="command exited with status 3")
    # A 2 MB heartbeat and a 5 MB worker.log are capped as well.
    for _ in range(6):
        if bench.job_row()["state"] == "failed":
            break
        await bench.cycle()
    row = bench.job_row()
    assert row["state"] == "failed", bench.audits()
    assert "status 3" in row["failure_reason"]
    assert any(kind == "events_skipped" for kind, _ in bench.audits())


async def test_every_read_is_capped_whatever_the_files_hold(bench: Bench) -> None:
    blob = b"y" * (2 << 20)
    (bench.folder / "heartbeat.json").write_bytes(
        b'{"allocation_id": "a1", "pad": "' + blob + b'"}'
    )
    bench.append(b'{"kind": "started", "pad": "' + blob + b'"}\n')
    # An ended allocation whose log tail is still owed: a 5 MB worker.log.
    ended = bench.scratch / "alloc" / "a2"
    ended.mkdir()
    (ended / "worker.log").write_bytes((b"z" * 200 + b"\n") * 25000)
    (ended / "events.jsonl").write_bytes(blob)
    await bench.store.insert_allocation(
        make_alloc("a2", state=AllocationState.ENDED, scheduler_id="99")
    )
    bench.runner.carried.want_log["a2"] = "j1"
    for _ in range(3):
        report = await bench.runner.cycle()
        assert report.ok, report.error
    reads = [
        size
        for script, size in zip(bench.transport.scripts, bench.transport.replies, strict=True)
        if " QUERY" in script
    ]
    # Two allocations read, 13 MB on scratch: each costs a poll well under 256 KiB.
    assert len(reads) == 3 and max(reads) < 2 * 256 * 1024, reads


# -- item 4: liveness counts only heartbeats of the current assignment ---------------------


def _decide(alloc: Allocation, jobs: list[Any], beat: Heartbeat, now_s: float):
    snapshot = ClusterSnapshot(
        cluster="c1",
        query_ok=True,
        scheduler_jobs={"a1": sched_job("a1")},
        files={"a1": AllocationFiles(allocation_id="a1", heartbeat=beat, events_offset=0)},
    )
    profile = make_profile()
    return decide_cycle(
        DecideInput(
            now=T0 + timedelta(seconds=now_s),
            profile=profile,
            profiles={"c1": profile},
            settings=DaemonSettings(stale_after_s=60, stop_grace_s=30),
            mode=ClusterMode.WATCH,
            usable_clusters={"c1"},
            snapshot=snapshot,
            allocations=[alloc],
            all_live=[alloc],
            jobs={j.id: j for j in jobs},
        ),
        lambda: "anew",
    )


@pytest.mark.parametrize(
    ("job_id", "epoch"), [("j2", 2), ("j1", 1), ("j1", 3), (None, None)], ids=str
)
def test_a_heartbeat_of_another_assignment_does_not_keep_it_alive(
    job_id: str | None, epoch: int | None
) -> None:
    job = make_job("j1", state=JobState.RUNNING, epoch=2, allocation_id="a1")
    alloc = make_alloc(
        "a1", job_id="j1", scheduler_id="100", started_at=T0, seq_changed_at=T0, last_seq=1
    )
    seq = 1
    for now_s in range(10, 80, 10):
        seq += 1
        beat = Heartbeat(
            allocation_id="a1", seq=seq, state=WorkerState.RUNNING, job_id=job_id, epoch=epoch
        )
        out = _decide(alloc, [job], beat, now_s)
        alloc = out.allocations.get("a1", alloc)
        job = out.jobs.get("j1", job)
        if job.state is JobState.QUEUED:
            break
    assert job.state is JobState.QUEUED and alloc.stop_requested_at is not None
    assert now_s == 60


def test_the_assignments_own_heartbeat_keeps_it_alive() -> None:
    job = make_job("j1", state=JobState.RUNNING, epoch=2, allocation_id="a1")
    alloc = make_alloc(
        "a1", job_id="j1", scheduler_id="100", started_at=T0, seq_changed_at=T0, last_seq=1
    )
    for seq, now_s in enumerate(range(10, 200, 10), start=2):
        beat = Heartbeat(
            allocation_id="a1", seq=seq, state=WorkerState.RUNNING, job_id="j1", epoch=2
        )
        out = _decide(alloc, [job], beat, now_s)
        alloc = out.allocations.get("a1", alloc)
        job = out.jobs.get("j1", job)
    assert job.state is JobState.RUNNING and alloc.stop_requested_at is None


def test_an_unbound_allocation_lives_on_idle_heartbeats_only() -> None:
    for job_id, stale in ((None, False), ("j9", True)):
        alloc = make_alloc("a1", scheduler_id="100", started_at=T0, seq_changed_at=T0, last_seq=1)
        hung = False
        for seq, now_s in enumerate(range(10, 100, 10), start=2):
            state = WorkerState.IDLE if job_id is None else WorkerState.RUNNING
            beat = Heartbeat(
                allocation_id="a1", seq=seq, state=state, job_id=job_id, epoch=4 if job_id else None
            )
            out = _decide(alloc, [], beat, now_s)
            hung = hung or any(a.kind == "worker_hung" for a in out.audits)
            # An idle worker with nothing to do is released (issue 17): keep it in play so
            # only liveness is judged here.
            alloc = out.allocations.get("a1", alloc).model_copy(update={"stop_requested_at": None})
        assert hung is stale, job_id


def test_a_heartbeat_naming_another_allocation_does_not_count() -> None:
    job = make_job("j1", state=JobState.RUNNING, epoch=2, allocation_id="a1")
    alloc = make_alloc(
        "a1", job_id="j1", scheduler_id="100", started_at=T0, seq_changed_at=T0, last_seq=1
    )
    beat = Heartbeat(allocation_id="a7", seq=50, state=WorkerState.RUNNING, job_id="j1", epoch=2)
    out = _decide(alloc, [job], beat, 60)
    assert out.jobs["j1"].state is JobState.QUEUED


# -- credentials leave the folder of an ended allocation -----------------------------------


async def test_the_daemon_removes_credentials_of_an_ended_allocation(bench: Bench) -> None:
    assert (bench.folder / "credentials").exists()
    await bench.cycle()
    assert (bench.folder / "credentials").exists()  # live: kept
    bench.queue("a1 100 ended TIMEOUT")
    await bench.cycle()
    assert not (bench.folder / "credentials").exists()
    assert (bench.folder / "heartbeat.json").exists()  # only the secret goes


async def test_the_first_read_sweeps_credentials_a_crash_left_behind(bench: Bench) -> None:
    hour_ago = time.time() - 3600
    old_ended = bench.scratch / "alloc" / "a5"
    young = bench.scratch / "alloc" / "a6"  # e.g. just written by a submit in flight
    for folder in (old_ended, young):
        folder.mkdir()
        (folder / "credentials").write_text("{}")
    os.utime(old_ended / "credentials", (hour_ago, hour_ago))
    os.utime(bench.folder / "credentials", (hour_ago, hour_ago))  # a1 is live
    await bench.cycle()
    assert not (old_ended / "credentials").exists()
    assert (young / "credentials").exists()
    assert (bench.folder / "credentials").exists()
    # Only once per daemon start: later reads do not list the scratch folder.
    os.utime(young / "credentials", (hour_ago, hour_ago))
    await bench.cycle()
    assert (young / "credentials").exists()
    reads = [s for s in bench.transport.scripts if " QUERY" in s]
    assert len(reads) == 2 and "find " in reads[0] and "find " not in reads[1]


def test_retention_deletes_nothing_for_a_pointer_that_is_not_the_jobs_own(
    tmp_path: Path,
) -> None:
    from relaymd.daemon.retention import apply_retention
    from relaymd.storage import open_store

    store = open_store(StorageAccess(url=(tmp_path / "s").as_uri()))
    local = tmp_path / "f.bin"
    local.write_bytes(b"x")
    refs = [
        upload_checkpoint(
            store, job_id="j1", epoch=2, seq=s, step=10 * s, files=[("f", local)], engine="e"
        )
        for s in (1, 2, 3, 4)
    ]
    foreign = refs[0].model_copy(update={"seq": 10**9})  # a row from before verification
    job = make_job("j1", epoch=2, checkpoint=foreign)
    assert apply_retention(store, job) == []
    assert len(store.list_keys("jobs/j1/checkpoints/")) == 8
    assert len(apply_retention(store, make_job("j1", epoch=2, checkpoint=refs[3]))) == 3


def test_an_oversized_binary_line_is_skipped_even_while_it_is_still_growing(
    tmp_path: Path,
) -> None:
    import subprocess

    from relaymd.mailbox.carrier import ReadRequest
    from relaymd.mailbox.scratch_read import build_read_script, parse_read_output

    folder = tmp_path / "alloc" / "a1"
    folder.mkdir(parents=True)
    events = folder / "events.jsonl"
    events.write_bytes(b"\x00\xff" * (300 << 10))  # 600 KiB, binary, no newline yet

    def poll(offset: int, skipping: bool) -> AllocationFiles:
        req = [ReadRequest(allocation_id="a1", events_offset=offset, skipping=skipping)]
        script, token = build_read_script(str(tmp_path), "true", req)
        out = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True)
        return parse_read_output(out.stdout, token, "c1", req, lambda _t: []).files["a1"]

    first = poll(0, False)
    assert first.events_skipping and first.oversized_lines == 1 and first.events == []
    second = poll(first.events_offset, True)  # the rest of what is there, no newline yet
    assert second.events_skipping and second.events_offset == events.stat().st_size
    tail = WorkerEvent(kind=EventKind.STARTED, allocation_id="a1").model_dump_json().encode()
    with open(events, "ab") as fh:
        fh.write(b"\x01" * 1000 + b"\n" + tail + b"\n")
    third = poll(second.events_offset, True)
    assert (
        not third.events_skipping and third.events_offset == events.stat().st_size - len(tail) - 1
    )
    fourth = poll(third.events_offset, False)
    assert [e.kind for e in fourth.events] == [EventKind.STARTED]
    assert fourth.events_offset == events.stat().st_size


def test_a_reserved_successor_lives_on_the_heartbeat_of_its_pre_written_assignment() -> None:
    from relaymd.daemon.liveness import heartbeat_counts
    from relaymd.models.job import JobEpoch

    waiting = Heartbeat(
        allocation_id="a2", seq=3, state=WorkerState.PREPARING, job_id="j1", epoch=3
    )
    # Reserved for j1's epoch 3 (ADR 0009): its waiting heartbeat is news about it.
    assert heartbeat_counts("a2", None, waiting, reserved=JobEpoch("j1", 3))
    # Without the reservation, or for another epoch, it keeps nothing alive.
    assert not heartbeat_counts("a2", None, waiting)
    assert not heartbeat_counts("a2", None, waiting, reserved=JobEpoch("j1", 4))
    assert not heartbeat_counts("a2", None, waiting, reserved=JobEpoch("j9", 3))
