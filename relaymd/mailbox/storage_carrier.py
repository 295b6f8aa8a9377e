"""The second mailbox carrier: object storage, for workers without shared scratch (ADR 0022).

Every allocation's mailbox is `mailbox/<allocation_id>/` in the job store. One read is one
LIST of `mailbox/` (a request per 1000 keys), then GETs only where the LIST says there is
news: a heartbeat whose ETag is not the one the HeartbeatMemo holds, the part of events.jsonl
past the stored offset (a ranged GET, since the worker rewrites the whole object), a log tail
when one is owed. Everything it brings back goes through relaymd.mailbox.reading, so the caps
and "missing or unparsable is no news" are the scratch carrier's. A write is a PUT or DELETE
per file; object prefixes need no mkdir.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pydantic import BaseModel, Field

from relaymd.mailbox.carrier import (
    FileRemoval,
    FileWrite,
    MailboxRead,
    MailboxWrites,
    MailboxWritten,
    ReadRequest,
)
from relaymd.mailbox.layout import (
    CREDENTIALS_FILE,
    EVENTS_FILE,
    HEARTBEAT_FILE,
    STORAGE_MAILBOX_ROOT,
    WORKER_LOG_FILE,
    storage_mailbox_key,
)
from relaymd.mailbox.models import HEARTBEAT_MAX_BYTES
from relaymd.mailbox.reading import (
    EVENTS_WINDOW_BYTES,
    LOG_TAIL_BYTES,
    HeartbeatMemo,
    RawFiles,
    files_from_raw,
)
from relaymd.storage.base import ObjectNotFound, ObjectStore, StorageError
from relaymd.storage.listing import ObjectInfo
from relaymd.storage.parallel import each

# How far past an oversized event line's start one poll looks for its end: a ranged GET of
# this much (the worker never writes such a line; only a foreign writer does).
STORAGE_SKIP_SCAN_BYTES = 16 * EVENTS_WINDOW_BYTES


class RequestCount(BaseModel):
    """Storage requests one read or write made, by kind (B2 bills them by class)."""

    list: int = 0
    get: int = 0
    put: int = 0
    delete: int = 0

    @property
    def total(self) -> int:
        return self.list + self.get + self.put + self.delete


class StorageRead(MailboxRead):
    """The requested mailboxes, and every allocation id that has a heartbeat in the bucket
    (how a worker nobody submitted, e.g. a person's own GPU, becomes known)."""

    heartbeat_ids: list[str] = Field(default_factory=list)
    requests: RequestCount = Field(default_factory=RequestCount)


class _Fetch(BaseModel):
    """One GET the LIST called for: what it is for and the byte range."""

    allocation_id: str
    purpose: str  # "heartbeat", "events", "skip", "log"
    info: ObjectInfo
    start: int
    length: int


def _index(objects: Sequence[ObjectInfo]) -> dict[str, dict[str, ObjectInfo]]:
    """allocation id -> file name -> listed object; keys of any other shape are ignored."""
    index: dict[str, dict[str, ObjectInfo]] = {}
    for info in objects:
        parts = info.key[len(STORAGE_MAILBOX_ROOT) :].split("/")
        if len(parts) == 2 and parts[0] and parts[1]:
            index.setdefault(parts[0], {})[parts[1]] = info
    return index


def _events_fetch(req: ReadRequest, info: ObjectInfo | None) -> _Fetch | None:
    # A shorter object than the offset is a stale writer's rewrite: no news, never a rewind.
    if info is None or info.size <= req.events_offset:
        return None
    purpose, window = ("skip", STORAGE_SKIP_SCAN_BYTES) if req.skipping else ("events", 0)
    length = window or EVENTS_WINDOW_BYTES
    return _Fetch(
        allocation_id=req.allocation_id,
        purpose=purpose,
        info=info,
        start=req.events_offset,
        length=length,
    )


def plan_fetches(
    requests: Sequence[ReadRequest],
    index: dict[str, dict[str, ObjectInfo]],
    memo: HeartbeatMemo | None,
) -> tuple[list[_Fetch], RawFiles]:
    """The GETs this read needs, and what the LIST alone already tells (absent heartbeats)."""
    fetches: list[_Fetch] = []
    raw = RawFiles()
    for req in requests:
        objs = index.get(req.allocation_id, {})
        beat = objs.get(HEARTBEAT_FILE)
        if beat is None:
            raw.heartbeats[req.allocation_id] = ("", b"")  # missing: no news, never memoised
        elif memo is None or memo.fingerprint(req.allocation_id) != beat.etag:
            # One byte past the cap is enough to know it is oversized.
            fetches.append(
                _Fetch(
                    allocation_id=req.allocation_id,
                    purpose="heartbeat",
                    info=beat,
                    start=0,
                    length=HEARTBEAT_MAX_BYTES + 1,
                )
            )
        events = _events_fetch(req, objs.get(EVENTS_FILE))
        if events is not None:
            fetches.append(events)
        log = objs.get(WORKER_LOG_FILE)
        if req.want_log and log is not None:
            start = max(0, log.size - LOG_TAIL_BYTES)
            fetches.append(
                _Fetch(
                    allocation_id=req.allocation_id,
                    purpose="log",
                    info=log,
                    start=start,
                    length=LOG_TAIL_BYTES,
                )
            )
    return fetches, raw


def _store_fetched(raw: RawFiles, fetch: _Fetch, data: bytes | None) -> None:
    alloc_id = fetch.allocation_id
    if fetch.purpose == "heartbeat":
        # Gone between LIST and GET: no news (a "" fingerprint is never memoised as seen).
        raw.heartbeats[alloc_id] = (fetch.info.etag if data is not None else "", data or b"")
    elif data is None:
        return
    elif fetch.purpose == "events":
        raw.events[alloc_id] = data
    elif fetch.purpose == "skip":
        end = data.find(b"\n")
        raw.skips[alloc_id] = f"{end + 1} nl" if end >= 0 else f"{len(data)} x"
    else:
        raw.logs[alloc_id] = data


class StorageCarrier:
    """Mailboxes under `mailbox/` in the job store (S3/B2, or file:// in tests)."""

    def __init__(
        self, store: ObjectStore, memo: HeartbeatMemo | None = None, cluster: str = ""
    ) -> None:
        self.store = store
        self.memo = memo
        self.cluster = cluster
        self.last_requests = RequestCount()

    def _get(self, fetch: _Fetch) -> bytes | None:
        try:
            return self.store.get_range(fetch.info.key, fetch.start, fetch.length)
        except ObjectNotFound:
            return None

    def read_sync(
        self, requests: Sequence[ReadRequest], *, sweep_keep: Sequence[str] | None = None
    ) -> StorageRead:
        listing = self.store.list_objects(STORAGE_MAILBOX_ROOT)
        count = RequestCount(list=listing.requests)
        index = _index(listing.objects)
        fetches, raw = plan_fetches(requests, index, self.memo)
        for fetch, data in zip(fetches, each(self._get, fetches), strict=True):
            _store_fetched(raw, fetch, data)
        count.get += len(fetches)
        if sweep_keep is not None:
            keep = set(sweep_keep)
            stale = [a for a, objs in index.items() if a not in keep and CREDENTIALS_FILE in objs]
            each(lambda a: self.store.delete_key(storage_mailbox_key(a, CREDENTIALS_FILE)), stale)
            count.delete += len(stale)
        read = StorageRead(
            files={r.allocation_id: files_from_raw(r, raw, self.memo) for r in requests},
            heartbeat_ids=sorted(a for a, objs in index.items() if HEARTBEAT_FILE in objs),
            requests=count,
        )
        self.last_requests = count
        return read

    async def read(
        self, requests: Sequence[ReadRequest], *, sweep_keep: Sequence[str] | None = None
    ) -> StorageRead:
        """Every requested mailbox: one LIST and the GETs it calls for, off the event loop."""
        return await asyncio.to_thread(self.read_sync, requests, sweep_keep=sweep_keep)

    def _put(self, item: FileWrite) -> bool:
        try:
            self.store.put_bytes(storage_mailbox_key(item.allocation_id, item.name), item.data)
        except StorageError:
            return False
        return True

    def _remove(self, item: FileRemoval) -> bool:
        try:
            self.store.delete_key(storage_mailbox_key(item.allocation_id, item.name))
        except StorageError:
            return False
        return True

    def write_sync(self, writes: MailboxWrites) -> MailboxWritten:
        """PUTs, then DELETEs; `mkdirs` need nothing (a prefix exists once a key is in it)."""
        put_ok = each(self._put, writes.files)
        removed_ok = each(self._remove, writes.removals)
        done: list[tuple[FileWrite | FileRemoval, bool]] = [
            *zip(writes.files, put_ok, strict=True),
            *zip(writes.removals, removed_ok, strict=True),
        ]
        failed = [(item.allocation_id, item.name) for item, ok in done if not ok]
        self.last_requests = RequestCount(put=len(writes.files), delete=len(writes.removals))
        return MailboxWritten(complete=True, failed_files=failed)

    async def write(self, writes: MailboxWrites) -> MailboxWritten:
        return await asyncio.to_thread(self.write_sync, writes)
