"""Workers without shared scratch: real `relaymd-worker --mailbox s3://...` processes relay a
real OpenMM job (Reference platform, tiny water box) through moto S3 over HTTP. The test plays
the daemon through the storage carrier only (relaymd.mailbox.storage_carrier): it never
touches a worker's folder, and the worker runs in a private temp folder of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from relaymd.mailbox.carrier import FileWrite, MailboxWrites, ReadRequest
from relaymd.mailbox.models import Assignment, EventKind, WorkerEvent
from relaymd.mailbox.reading import HeartbeatMemo
from relaymd.mailbox.storage_carrier import StorageCarrier
from relaymd.models import StorageAccess
from relaymd.storage.checkpoints import list_checkpoints, verify_checkpoint
from tests.moto_server import SECRET_ACCESS_KEY
from tests.worker.worker_harness import REPO, TERMINAL, Relay, openmm_engine, wait_for


def _engine(total: int) -> dict[str, object]:
    return openmm_engine(total, topology=None)


class RemoteAllocation:
    """One allocation whose mailbox is `mailbox/<id>/` in the bucket, seen as the daemon sees
    it: through the carrier, events read from a stored offset."""

    def __init__(self, relay: Relay, carrier: StorageCarrier, tmp: Path) -> None:
        relay.allocations += 1
        self.id = f"r{relay.allocations:03d}"
        self.relay, self.carrier = relay, carrier
        self.tmp = tmp / self.id  # the worker's own TMPDIR: nothing here is read by the test
        self.tmp.mkdir(parents=True)
        self.offset = 0
        self.seen: list[WorkerEvent] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def assign(self, assignment: Assignment) -> None:
        access = self.relay.access.credentials_json().encode()
        data = assignment.model_dump_json().encode()
        files = [
            FileWrite(allocation_id=self.id, name="credentials", data=access),
            FileWrite(allocation_id=self.id, name="assignment.json", data=data),
        ]
        written = asyncio.run(self.carrier.write(MailboxWrites(mkdirs=[self.id], files=files)))
        assert written.failed_files == []

    def start(self) -> None:
        access = self.relay.access
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RELAYMD_", "AWS_"))
        }
        env.update(PYTHONPATH=str(REPO), TMPDIR=str(self.tmp))
        if access.access_key_id and access.secret_access_key and access.endpoint_url:
            env.update(
                AWS_ACCESS_KEY_ID=access.access_key_id.get_secret_value(),
                AWS_SECRET_ACCESS_KEY=access.secret_access_key.get_secret_value(),
                AWS_ENDPOINT_URL=access.endpoint_url,
                AWS_REGION=access.region or "us-east-1",
            )
        args = [
            sys.executable, "-m", "worker_entry",
            "--mailbox", f"{access.url}/mailbox/{self.id}",
            "--mailbox-poll", "0.3",
            "--heartbeat-interval", "0.3",
            "--idle-timeout", "2",
            "--margin-min", "0.5", "--margin-max", "2",
            "--platform", "Reference",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def poll(self) -> list[WorkerEvent]:
        """One daemon read of this mailbox: the events new since the last one."""
        read = asyncio.run(
            self.carrier.read([ReadRequest(allocation_id=self.id, events_offset=self.offset)])
        )
        files = read.files[self.id]
        self.offset = files.events_offset
        self.seen += files.events
        return files.events

    def wait_event(self, kinds: set[EventKind], epoch: int, timeout: float = 90) -> WorkerEvent:
        def find() -> WorkerEvent | None:
            self.poll()
            found = [e for e in self.seen if e.kind in kinds and e.epoch == epoch]
            if not found and self.proc is not None and self.proc.poll() not in (None, 0):
                stderr = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"worker exited {self.proc.returncode}: {stderr[-3000:]}")
            return found[0] if found else None

        event = wait_for(find, timeout, f"{kinds} of epoch {epoch} in the bucket")
        assert isinstance(event, WorkerEvent)
        return event

    def wait_exit(self) -> int:
        assert self.proc is not None
        return self.proc.wait(90)


def _launched(
    relay: Relay, carrier: StorageCarrier, tmp_path: Path, total: int
) -> RemoteAllocation:
    """A new mailbox assigned the job's next segment, its worker process started."""
    alloc = RemoteAllocation(relay, carrier, tmp_path / "workers")
    alloc.assign(relay.assignment(alloc, _engine(total)))
    alloc.start()
    return alloc


@pytest.fixture(params=["s3", "file"])
def relay(request: pytest.FixtureRequest, tmp_path: Path, bundle_dir: Path) -> Relay:
    """The job bucket: moto S3 over HTTP, or a file:// folder only the store code touches."""
    if request.param == "s3":
        access: StorageAccess = request.getfixturevalue("moto_access")
    else:
        root = tmp_path / "bucket"
        root.mkdir()
        access = StorageAccess(url=f"file://{root}")
    relay = Relay(tmp_path / "daemon", access, "job-remote")
    relay.upload_bundle(bundle_dir)
    return relay


@pytest.mark.slow
def test_a_job_relays_through_the_bucket_with_no_shared_folder(
    relay: Relay, tmp_path: Path
) -> None:
    carrier = StorageCarrier(relay.store, HeartbeatMemo())
    first = _launched(relay, carrier, tmp_path, 60)
    end = first.wait_event(TERMINAL, epoch=1)
    assert end.kind is EventKind.COMPLETED and end.step == 60, end
    assert first.wait_exit() == 0
    assert end.checkpoint is not None
    verify_checkpoint(relay.store, end.checkpoint)  # the bytes are in the bucket
    # The worker's heartbeat and log reached the daemon through the bucket as well.
    final = asyncio.run(carrier.read([ReadRequest(allocation_id=first.id, want_log=True)]))
    files = final.files[first.id]
    assert files.heartbeat is not None and files.heartbeat.allocation_id == first.id
    assert files.log_tail and any("assignment_taken" in line for line in files.log_tail)
    assert not any(SECRET_ACCESS_KEY in line for line in files.log_tail)
    assert first.id in final.heartbeat_ids


@pytest.mark.slow
def test_a_worker_killed_mid_segment_is_resumed_by_another(relay: Relay, tmp_path: Path) -> None:
    total = 600
    carrier = StorageCarrier(relay.store, HeartbeatMemo())
    killed = _launched(relay, carrier, tmp_path, total)
    killed.wait_event({EventKind.CHECKPOINT}, epoch=1)
    assert killed.proc is not None
    killed.proc.send_signal(signal.SIGKILL)
    assert killed.wait_exit() == -signal.SIGKILL
    killed.poll()  # whatever it managed to send before it died
    relay.advance(killed.seen)
    assert relay.pointer is not None and relay.pointer.epoch == 1
    assert relay.pointer.step < total
    assert relay.pointer in list_checkpoints(relay.store, relay.job_id)

    successor = _launched(relay, carrier, tmp_path, total)
    started = successor.wait_event({EventKind.STARTED}, epoch=2)
    assert started.resumed_from == "checkpoint" and started.step == relay.pointer.step
    end = successor.wait_event(TERMINAL, epoch=2, timeout=180)
    assert end.kind is EventKind.COMPLETED and end.step == total
    assert successor.wait_exit() == 0
    assert end.checkpoint is not None
    verify_checkpoint(relay.store, end.checkpoint)


@pytest.mark.slow
def test_sigterm_hands_off_and_the_last_events_reach_the_bucket(
    relay: Relay, tmp_path: Path
) -> None:
    """The handoff is written as the worker exits: the mirror's final send must carry it."""
    carrier = StorageCarrier(relay.store, HeartbeatMemo())
    alloc = _launched(relay, carrier, tmp_path, 2000)
    alloc.wait_event({EventKind.CHECKPOINT}, epoch=1)
    assert alloc.proc is not None
    alloc.proc.send_signal(signal.SIGTERM)
    assert alloc.wait_exit() == 0
    end = alloc.wait_event(TERMINAL, epoch=1, timeout=10)
    assert end.kind is EventKind.HANDOFF and end.checkpoint is not None
    verify_checkpoint(relay.store, end.checkpoint)
