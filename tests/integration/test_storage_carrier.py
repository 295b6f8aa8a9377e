"""The storage carrier against real S3 (moto over HTTP, requests counted at a proxy in front
of it, i.e. what crossed the wire) and against file://: one LIST per poll, GETs only for
objects whose ETag or size says there is news, the rules of the scratch carrier."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from latency_proxy import LatencyProxy, run_latency_proxy
from moto_server import MotoServer, run_moto_server

from relaymd.mailbox.carrier import FileRemoval, FileWrite, MailboxWrites, ReadRequest
from relaymd.mailbox.layout import storage_mailbox_key
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.mailbox.reading import HeartbeatMemo
from relaymd.mailbox.storage_carrier import StorageCarrier, StorageRead
from relaymd.storage import FileStore, ObjectStore, open_store

IDS = ("a1", "a2", "a3")


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with run_moto_server() as server:
        yield server


@pytest.fixture
def proxied(moto: MotoServer) -> Iterator[tuple[LatencyProxy, ObjectStore]]:
    with run_latency_proxy(moto.endpoint_url, delay_s=0.0) as proxy:
        yield proxy, open_store(moto.access(endpoint_url=proxy.endpoint_url))


def _beat(alloc_id: str, seq: int) -> bytes:
    beat = Heartbeat(allocation_id=alloc_id, seq=seq, state=WorkerState.IDLE)
    return beat.model_dump_json().encode()


def _event(alloc_id: str, step: int) -> bytes:
    event = WorkerEvent(
        kind=EventKind.CHECKPOINT, allocation_id=alloc_id, job_id="j", epoch=1, step=step
    )
    return event.model_dump_json().encode() + b"\n"


def _worker_writes(store: ObjectStore, alloc_id: str, seq: int, events: bytes) -> None:
    store.put_bytes(storage_mailbox_key(alloc_id, "heartbeat.json"), _beat(alloc_id, seq))
    store.put_bytes(storage_mailbox_key(alloc_id, "events.jsonl"), events)


def _read(carrier: StorageCarrier, requests: list[ReadRequest]) -> StorageRead:
    return asyncio.run(carrier.read(requests))


def _wire(proxy: LatencyProxy) -> Counter[str]:
    """Requests that crossed the wire: LIST is a GET with ?list-type=2."""
    return Counter(
        "LIST" if r.method == "GET" and "list-type" in r.path else r.method
        for r in proxy.snapshot()
    )


def test_a_poll_is_one_list_and_gets_only_for_news_on_the_wire(
    proxied: tuple[LatencyProxy, ObjectStore],
) -> None:
    proxy, store = proxied
    for alloc_id in IDS:
        _worker_writes(store, alloc_id, 1, _event(alloc_id, 10))
    carrier = StorageCarrier(store, HeartbeatMemo())
    requests = [ReadRequest(allocation_id=a) for a in IDS]

    proxy.reset()
    first = _read(carrier, requests)
    assert _wire(proxy) == Counter(LIST=1, GET=2 * len(IDS))  # a heartbeat and events each
    assert [first.files[a].heartbeat.seq for a in IDS] == [1, 1, 1]  # type: ignore[union-attr]
    assert [e.step for a in IDS for e in first.files[a].events] == [10, 10, 10]

    # Nothing new: the offsets moved past the events and every ETag is the one memoised.
    requests = [
        ReadRequest(allocation_id=a, events_offset=first.files[a].events_offset) for a in IDS
    ]
    proxy.reset()
    quiet = _read(carrier, requests)
    assert _wire(proxy) == Counter(LIST=1)
    assert quiet.files["a2"].heartbeat is not None and quiet.files["a2"].heartbeat.seq == 1
    assert quiet.files["a2"].events == []

    # One worker beats and appends: exactly its two objects are fetched.
    _worker_writes(store, "a2", 2, _event("a2", 10) + _event("a2", 20))
    proxy.reset()
    news = _read(carrier, requests)
    assert _wire(proxy) == Counter(LIST=1, GET=2)
    assert news.files["a2"].heartbeat.seq == 2  # type: ignore[union-attr]
    assert [e.step for e in news.files["a2"].events] == [20]
    assert carrier.last_requests.list == 1 and carrier.last_requests.get == 2


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        return FileStore(tmp_path / "bucket")
    moto: MotoServer = request.getfixturevalue("moto")
    return open_store(moto.access())


def test_missing_or_unparsable_is_no_news(store: ObjectStore) -> None:
    store.put_bytes(storage_mailbox_key("a1", "heartbeat.json"), b'{"allocation_id": "a1", "se')
    store.put_bytes(
        storage_mailbox_key("a1", "events.jsonl"),
        b"not json\n" + _event("someone-else", 5) + _event("a1", 7) + b'{"kind": "chec',
    )
    carrier = StorageCarrier(store, HeartbeatMemo())
    read = _read(carrier, [ReadRequest(allocation_id="a1"), ReadRequest(allocation_id="a9")])
    a1, a9 = read.files["a1"], read.files["a9"]
    assert a1.heartbeat is None and a9.heartbeat is None and a9.events == []
    assert [e.step for e in a1.events] == [7] and a1.unusable_lines == 2
    # The half-written last line waits: the offset stops at the last newline.
    whole = store.get_bytes(storage_mailbox_key("a1", "events.jsonl"))
    assert a1.events_offset == whole.rfind(b"\n") + 1
    assert read.heartbeat_ids == ["a1"]


def test_a_stale_rewrite_shorter_than_the_offset_is_ignored(store: ObjectStore) -> None:
    """A worker of an old epoch that rewrites events.jsonl late (whole, from its own older copy)
    never rewinds the daemon's offset nor replays old lines."""
    lines = _event("a1", 10) + _event("a1", 20)
    _worker_writes(store, "a1", 3, lines)
    carrier = StorageCarrier(store, HeartbeatMemo())
    first = _read(carrier, [ReadRequest(allocation_id="a1")]).files["a1"]
    assert [e.step for e in first.events] == [10, 20]
    _worker_writes(store, "a1", 1, _event("a1", 10))  # the late, stale writer
    late = _read(carrier, [ReadRequest(allocation_id="a1", events_offset=first.events_offset)])
    assert late.files["a1"].events == [] and late.files["a1"].events_offset == len(lines)
    # Its heartbeat's seq went back: the daemon's liveness counts that as no progress.
    assert late.files["a1"].heartbeat.seq == 1  # type: ignore[union-attr]


def test_oversized_heartbeat_and_log_tail(store: ObjectStore) -> None:
    store.put_bytes(storage_mailbox_key("a1", "heartbeat.json"), b"x" * 70000)
    log = "".join(f"line {i}\n" for i in range(2000)).encode()
    store.put_bytes(storage_mailbox_key("a1", "worker.log"), log)
    files = _read(StorageCarrier(store), [ReadRequest(allocation_id="a1", want_log=True)])
    a1 = files.files["a1"]
    assert a1.heartbeat is None and a1.heartbeat_oversized
    assert a1.log_tail is not None and a1.log_tail[-1] == "line 1999" and len(a1.log_tail) == 40


def test_write_puts_and_removes_and_the_sweep_drops_stale_credentials(store: ObjectStore) -> None:
    carrier = StorageCarrier(store)
    written = asyncio.run(
        carrier.write(
            MailboxWrites(
                mkdirs=["a1", "a2"],
                files=[
                    FileWrite(allocation_id="a1", name="assignment.json", data=b"{}"),
                    FileWrite(allocation_id="a1", name="credentials", data=b"c1"),
                    FileWrite(allocation_id="a2", name="credentials", data=b"c2"),
                ],
            )
        )
    )
    assert written.complete and written.failed_files == []
    assert store.get_bytes("mailbox/a1/credentials") == b"c1"
    removal = FileRemoval(allocation_id="a1", name="assignment.json")
    asyncio.run(carrier.write(MailboxWrites(removals=[removal])))
    assert not store.exists("mailbox/a1/assignment.json")
    asyncio.run(carrier.read([], sweep_keep=["a1"]))
    assert store.exists("mailbox/a1/credentials") and not store.exists("mailbox/a2/credentials")
