"""The daemon's decisions, unchanged, on what the storage carrier read out of a bucket: a
stale epoch's late write is fenced, and a heartbeat whose object did not change (no GET, the
memo stands in) ages on the daemon's clock until the worker counts as hung."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from relaymd.daemon.decide import decide_cycle
from relaymd.daemon.decide.decisions import DecideInput
from relaymd.daemon.evidence import claim_key
from relaymd.daemon.provision import ClusterMode
from relaymd.mailbox.carrier import AllocationFiles, ClusterSnapshot, ReadRequest
from relaymd.mailbox.layout import storage_mailbox_key
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerState
from relaymd.mailbox.reading import HeartbeatMemo
from relaymd.mailbox.storage_carrier import StorageCarrier
from relaymd.models import (
    Allocation,
    AllocationState,
    CheckpointRef,
    DaemonSettings,
    Job,
    JobState,
)
from relaymd.models.cluster import ClusterProfile
from relaymd.storage import FileStore
from tests.daemon.daemon_factories import SHA, T0, ev, make_alloc, make_job, make_profile
from tests.daemon.daemon_factories import make_sched_job as sj

SETTINGS = DaemonSettings(stale_after_s=60, stop_grace_s=30)


def _ref(epoch: int, seq: int, step: int) -> CheckpointRef:
    return CheckpointRef(
        epoch=epoch,
        seq=seq,
        step=step,
        prefix=f"jobs/j1/checkpoints/{epoch}-{seq}/",
        manifest_sha256=SHA,
    )


def _decide(
    profile: ClusterProfile,
    alloc: Allocation,
    job: Job,
    files: AllocationFiles,
    now_s: float,
    verified: set[str],
) -> object:
    snapshot = ClusterSnapshot(
        cluster="c1", query_ok=True, scheduler_jobs={"a1": sj("a1")}, files={"a1": files}
    )
    return decide_cycle(
        DecideInput(
            now=T0 + timedelta(seconds=now_s),
            profile=profile,
            profiles={"c1": profile},
            settings=SETTINGS,
            mode=ClusterMode.OPEN,
            usable_clusters={"c1"},
            snapshot=snapshot,
            allocations=[alloc],
            all_live=[alloc],
            jobs={job.id: job},
            verified=verified,
        ),
        lambda: "anew",
    )


def _beat(seq: int) -> bytes:
    beat = Heartbeat(allocation_id="a1", seq=seq, state=WorkerState.RUNNING, job_id="j1", epoch=2)
    return beat.model_dump_json().encode()


def test_a_stale_epoch_written_late_into_the_bucket_is_fenced(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "bucket")
    late = [
        ev(EventKind.CHECKPOINT, epoch=1, checkpoint=_ref(1, 9, 90)),
        ev(EventKind.COMPLETED, epoch=1, step=100),
    ]
    current = ev(EventKind.CHECKPOINT, epoch=2, checkpoint=_ref(2, 2, 20))
    lines = b"".join(e.model_dump_json().encode() + b"\n" for e in [*late, current])
    store.put_bytes(storage_mailbox_key("a1", "events.jsonl"), lines)
    store.put_bytes(storage_mailbox_key("a1", "heartbeat.json"), _beat(1))
    carrier = StorageCarrier(store, HeartbeatMemo())
    files = asyncio.run(carrier.read([ReadRequest(allocation_id="a1")])).files["a1"]
    assert len(files.events) == 3  # the carrier delivers; fencing is the daemon's

    job = make_job(
        "j1", state=JobState.RUNNING, epoch=2, allocation_id="a1", checkpoint=_ref(2, 1, 10)
    )
    alloc = make_alloc(
        "a1", state=AllocationState.RUNNING, job_id="j1", scheduler_id="100", started_at=T0
    )
    verified = {claim_key("j1", _ref(1, 9, 90)), claim_key("j1", _ref(2, 2, 20))}
    out = _decide(make_profile(), alloc, job, files, 1, verified)
    new = out.jobs["j1"]  # type: ignore[attr-defined]
    assert new.state is JobState.RUNNING and new.epoch == 2
    assert (new.checkpoint.epoch, new.checkpoint.seq) == (2, 2)
    assert "stale_event_ignored" in [a.kind for a in out.audits]  # type: ignore[attr-defined]


def test_an_unchanged_heartbeat_object_ages_until_the_worker_is_hung(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "bucket")
    store.put_bytes(storage_mailbox_key("a1", "heartbeat.json"), _beat(5))
    carrier = StorageCarrier(store, HeartbeatMemo())
    first = asyncio.run(carrier.read([ReadRequest(allocation_id="a1")])).files["a1"]
    assert first.heartbeat is not None and carrier.last_requests.get == 1
    again = asyncio.run(carrier.read([ReadRequest(allocation_id="a1")])).files["a1"]
    assert carrier.last_requests.get == 0 and again.heartbeat == first.heartbeat  # memo

    job = make_job("j1", state=JobState.RUNNING, epoch=2, allocation_id="a1")
    alloc = make_alloc(
        "a1",
        state=AllocationState.RUNNING,
        job_id="j1",
        scheduler_id="100",
        started_at=T0,
        last_seq=5,
        seq_changed_at=T0,
    )
    fresh = _decide(make_profile(), alloc, job, again, 59, set())
    assert "j1" not in fresh.jobs  # type: ignore[attr-defined]
    hung = _decide(make_profile(), alloc, job, again, 61, set())
    assert hung.jobs["j1"].state is JobState.QUEUED  # type: ignore[attr-defined]
