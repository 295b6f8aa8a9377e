"""The worker leaves no credentials behind and never writes a mailbox line the daemon skips."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from relaymd.mailbox.models import (
    EVENT_LINE_MAX_BYTES,
    HEARTBEAT_MAX_BYTES,
    EventKind,
    Heartbeat,
    WorkerEvent,
    WorkerState,
)
from relaymd.models import GpuInfo, StorageAccess
from tests.worker.atom_like import write_bundle
from tests.worker.worker_harness import Allocation, Relay, wait_for
from worker_entry.mailbox_io import Mailbox


def test_idle_exit_removes_the_credentials(tmp_path: Path, file_access: StorageAccess) -> None:
    alloc = Allocation(tmp_path, "idle1", file_access)
    alloc.start(idle_timeout=0.5)
    assert alloc.wait_exit() == 0
    assert [e.kind for e in alloc.events()] == [EventKind.IDLE_EXIT]
    assert not (alloc.dir / "credentials").exists()
    assert (alloc.dir / "heartbeat.json").exists()


def test_sigterm_while_idle_removes_the_credentials(
    tmp_path: Path, file_access: StorageAccess
) -> None:
    alloc = Allocation(tmp_path, "term1", file_access)
    alloc.start(idle_timeout=60)
    # Signal handlers are in place once the worker says it is idle.
    wait_for(lambda: (hb := alloc.heartbeat()) is not None and hb.state == "idle", 30, "idle")
    alloc.kill(signal.SIGTERM)
    assert alloc.wait_exit() == 0
    assert not (alloc.dir / "credentials").exists()


def test_a_refused_start_removes_the_exposed_credentials(
    tmp_path: Path, file_access: StorageAccess
) -> None:
    alloc = Allocation(tmp_path, "bad1", file_access)
    (alloc.dir / "credentials").chmod(0o644)
    alloc.start(idle_timeout=1.0)
    assert alloc.wait_exit() == 2
    assert not (alloc.dir / "credentials").exists()


@pytest.mark.slow
def test_sigterm_during_a_segment_hands_off_and_removes_the_credentials(
    tmp_path: Path, file_access: StorageAccess
) -> None:
    bundle = write_bundle(tmp_path / "bundle", 100000, checkpoint_time_s=1.0, chunk_s=0.05)
    relay = Relay(tmp_path, file_access, "job-term")
    relay.upload_bundle(bundle)
    alloc = relay.allocation()
    engine = {
        "kind": "command",
        "preset": "atom",
        "command": [sys.executable, "fake_atom.py", "atom.cntl"],
        "target_samples": 100000,
        "settle_s": 0.1,
        "stop_grace_s": 20,
    }
    alloc.assign(relay.assignment(alloc, engine))
    alloc.start(idle_timeout=1.0)
    alloc.wait_event({EventKind.STARTED}, timeout=60)
    alloc.kill(signal.SIGTERM)
    end = alloc.wait_event({EventKind.HANDOFF}, timeout=60)
    assert alloc.wait_exit(60) == 0
    assert end.job_id == "job-term"
    assert not (alloc.dir / "credentials").exists()


def test_an_event_carrying_megabytes_is_cut_to_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "a1"
    folder.mkdir()
    mailbox = Mailbox(folder)
    tail = [f"line {i}" for i in range(30)] + ["E" * (2 << 20), "last words"]
    mailbox.append(
        WorkerEvent(
            kind=EventKind.FAILED,
            allocation_id="a1",
            job_id="j1",
            epoch=3,
            reason="R" * 100_000,
            log_tail=tail,
        )
    )
    data = (folder / "events.jsonl").read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert len(data) <= EVENT_LINE_MAX_BYTES
    event = WorkerEvent.model_validate_json(data)
    assert event.kind is EventKind.FAILED and event.job_id == "j1" and event.epoch == 3
    assert event.reason is not None and "characters cut by relaymd-worker" in event.reason
    assert event.log_tail[-1] == "last words"
    assert any("cut by relaymd-worker" in line for line in event.log_tail)


def test_a_heartbeat_stays_under_the_cap(tmp_path: Path) -> None:
    folder = tmp_path / "a1"
    folder.mkdir()
    gpus = [GpuInfo(name="NVIDIA H200 " + "x" * 200, memory_total_mib=143771)] * 500
    Mailbox(folder).write_heartbeat(
        Heartbeat(allocation_id="a1", seq=1, state=WorkerState.IDLE, gpus=gpus)
    )
    data = (folder / "heartbeat.json").read_bytes()
    assert len(data) <= HEARTBEAT_MAX_BYTES
    assert len(Heartbeat.model_validate_json(data).gpus) == 16
