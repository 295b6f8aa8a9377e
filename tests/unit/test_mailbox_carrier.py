"""The scratch carrier used through the MailboxCarrier seam, over a real local bash.

Verdicts come from the folder tree (modes, bytes, files gone) and from what a worker's own
writer put there, not from the carrier's view of itself.
"""

from __future__ import annotations

import stat
from pathlib import Path

from relaymd.mailbox.carrier import (
    FileRemoval,
    FileWrite,
    MailboxCarrier,
    MailboxWrites,
    ReadRequest,
)
from relaymd.mailbox.files import append_event, atomic_write_model
from relaymd.mailbox.layout import CREDENTIALS_FILE, EVENTS_FILE, HEARTBEAT_FILE, alloc_dir
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.mailbox.reading import HeartbeatMemo
from relaymd.mailbox.scratch import SchedulerQuery, ScratchCarrier
from relaymd.models import ClusterProfile
from relaymd.transport import LocalTransport


def local_transport(scratch: Path) -> LocalTransport:
    profile = ClusterProfile.model_validate(
        {
            "name": "local",
            "transport": "local",
            "scheduler": "direct",
            "scratch": str(scratch),
            "partitions": [{"name": "local", "walltime_minutes": 1, "gpus_per_allocation": 0}],
            "native_worker": ["true"],
            "command_timeout_s": 30,
        }
    )
    return LocalTransport(profile)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def worker_reports(folder: Path) -> int:
    """What a worker writes with its own local writer; the size of events.jsonl after it."""
    atomic_write_model(
        folder / HEARTBEAT_FILE, Heartbeat(allocation_id="a1", seq=7, state=WorkerState.IDLE)
    )
    append_event(folder / EVENTS_FILE, WorkerEvent(kind=EventKind.STARTED, allocation_id="a1"))
    return (folder / EVENTS_FILE).stat().st_size


async def test_scratch_carrier_writes_reads_and_removes_through_the_seam(tmp_path: Path) -> None:
    transport = local_transport(tmp_path)
    carrier: MailboxCarrier = ScratchCarrier(str(tmp_path), transport.run, HeartbeatMemo())
    secret = b'{"url": "s3://bucket/x"}'
    written = await carrier.write(
        MailboxWrites(
            mkdirs=["a1"],
            files=[FileWrite(allocation_id="a1", name=CREDENTIALS_FILE, data=secret, mode=0o600)],
        )
    )
    folder = Path(alloc_dir(str(tmp_path), "a1"))
    assert written.complete and not written.failed_files and not written.failed_dirs
    assert mode(folder) == 0o700 and mode(folder / CREDENTIALS_FILE) == 0o600
    assert (folder / CREDENTIALS_FILE).read_bytes() == secret

    events_size = worker_reports(folder)
    read = await carrier.read([ReadRequest(allocation_id="a1"), ReadRequest(allocation_id="a2")])
    files = read.files["a1"]
    assert files.heartbeat is not None and files.heartbeat.seq == 7
    assert [e.kind for e in files.events] == [EventKind.STARTED]
    assert files.events_offset == events_size
    assert read.files["a2"].heartbeat is None and read.files["a2"].events == []  # no news

    removed = await carrier.write(
        MailboxWrites(removals=[FileRemoval(allocation_id="a1", name=CREDENTIALS_FILE)])
    )
    assert removed.complete and not (folder / CREDENTIALS_FILE).exists()
    assert transport.round_trips == 3  # one script per read or write


async def test_scheduler_query_rides_in_the_same_round_trip(tmp_path: Path) -> None:
    transport = local_transport(tmp_path)
    carrier = ScratchCarrier(str(tmp_path), transport.run, cluster="c1")
    seen: list[str] = []

    def parse(text: str) -> list[str]:
        seen.append(text)
        return []

    ok = await carrier.read([], query=SchedulerQuery("echo queued-line", parse))
    assert ok.query_ok and ok.cluster == "c1" and [t.split() for t in seen] == [["queued-line"]]
    failed = await carrier.read([], query=SchedulerQuery("echo no squeue >&2; exit 3", parse))
    assert not failed.query_ok and failed.query_error == "no squeue"
    assert len(seen) == 1  # a failed query's output is never parsed
    assert transport.round_trips == 2
