"""What a read of the mailboxes brought back, made into AllocationFiles: for every carrier.

A carrier fetches bytes its own way (one script over SSH; a LIST and GETs on object storage)
and hands them over as RawFiles: per allocation the heartbeat with its fingerprint, a window
of events.jsonl after the stored offset (or the measure of an oversized line being skipped),
and a log tail. Everything here is carrier-neutral: the caps, the "missing or unparsable is no
news" rule, the skipping of oversized event lines, and the HeartbeatMemo that stands in for a
heartbeat the carrier left out because its fingerprint (content hash, ETag) did not change.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson
from pydantic import BaseModel, Field, ValidationError

from relaymd.mailbox.carrier import AllocationFiles, ReadRequest
from relaymd.mailbox.models import (
    EVENT_LINE_MAX_BYTES,
    HEARTBEAT_MAX_BYTES,
    Heartbeat,
    WorkerEvent,
)

# Per allocation per cycle; the rest follows next cycle. Four times the longest line a worker
# writes, so a window always holds at least one whole line.
EVENTS_WINDOW_BYTES = 4 * EVENT_LINE_MAX_BYTES
# How far past an oversized line's start a carrier looks for its end, in one poll.
SKIP_SCAN_BYTES = 64 << 20
LOG_TAIL_BYTES = 4096
LOG_TAIL_LINES = 40


class HeartbeatSeen(NamedTuple):
    """The daemon's last parsed copy of one heartbeat.json and the fingerprint it had (in
    memory only; a tuple, as one is made per moved heartbeat per poll)."""

    fingerprint: str  # "" when read without a fingerprint: always re-sent
    heartbeat: Heartbeat | None
    oversized: bool


class HeartbeatMemo:
    """Per cluster: what each allocation's heartbeat said last poll. A carrier leaves out a
    heartbeat whose fingerprint is unchanged, and this copy stands in for it; an unchanged
    file means an unchanged seq, so liveness (on the daemon's clock) still ages.

    It also keeps each allocation's last AllocationFiles that carried no events and no log:
    a poll that brings nothing new for the allocation (the usual case of a quiet one) gets
    that same object back instead of a new one equal to it (ADR 0030). Nobody changes an
    AllocationFiles once it is built."""

    def __init__(self) -> None:
        self.seen: dict[str, HeartbeatSeen] = {}
        self.quiet: dict[str, AllocationFiles] = {}

    def fingerprint(self, alloc_id: str) -> str:
        seen = self.seen.get(alloc_id)
        return seen.fingerprint if seen and seen.fingerprint else "-unknown"

    def keep_only(self, alloc_ids: set[str]) -> None:
        for alloc_id in set(self.seen) - alloc_ids:
            del self.seen[alloc_id]
        for alloc_id in set(self.quiet) - alloc_ids:
            del self.quiet[alloc_id]


class RawFiles(BaseModel):
    """The bytes one read brought back, per allocation; an absent entry was not sent."""

    heartbeats: dict[str, tuple[str, bytes]] = Field(default_factory=dict)  # id -> (fp, bytes)
    events: dict[str, bytes] = Field(default_factory=dict)
    skips: dict[str, str] = Field(default_factory=dict)  # id -> "<bytes> nl|x"
    logs: dict[str, bytes] = Field(default_factory=dict)


def parse_heartbeat(data: bytes) -> Heartbeat | None:
    if not data or len(data) > HEARTBEAT_MAX_BYTES:
        return None
    try:
        # orjson, not pydantic's own JSON parser: that one takes NaN and Infinity.
        return Heartbeat.model_validate(orjson.loads(data))
    except (orjson.JSONDecodeError, ValidationError):
        return None  # half-written or foreign: no news


def read_events_window(files: AllocationFiles, data: bytes, offset: int) -> None:
    """Parse `data` (at most EVENTS_WINDOW_BYTES of events.jsonl from byte `offset`) into
    `files`: complete lines become events, a trailing partial line waits for the next read,
    and a window with no newline at all starts an oversized line that is skipped."""
    if files.events_offset != offset:
        files.events_offset = offset
    if not data:  # nothing new, the usual case
        return
    end = data.rfind(b"\n")
    if end < 0:
        if len(data) >= EVENTS_WINDOW_BYTES:
            files.events_offset = offset + len(data)
            files.events_skipping = True
            files.oversized_lines += 1
        return
    for line in data[:end].split(b"\n"):
        if not line.strip():
            continue
        if len(line) >= EVENT_LINE_MAX_BYTES:
            files.oversized_lines += 1
            continue
        try:
            event = WorkerEvent.model_validate_json(line)
        except ValueError:  # ValidationError included: bad JSON, bad UTF-8, too deep, ...
            files.unusable_lines += 1
            continue
        if event.allocation_id != files.allocation_id:
            files.unusable_lines += 1
            continue
        files.events.append(event)
    files.events_offset = offset + end + 1


def skip_oversized(files: AllocationFiles, text: str, offset: int) -> None:
    """Move past the oversized line the carrier measured ("<bytes> nl|x")."""
    parts = text.split()
    files.events_skipping = True
    files.events_offset = offset
    if len(parts) != 2 or not parts[0].isdigit():
        return
    files.events_offset = offset + int(parts[0])
    files.events_skipping = parts[1] != "nl"


def _heartbeat_of(
    raw: RawFiles, memo: HeartbeatMemo | None, alloc_id: str
) -> tuple[Heartbeat | None, bool]:
    """The allocation's heartbeat this cycle, and whether its file was over the cap."""
    if alloc_id in raw.heartbeats:
        fingerprint, beat = raw.heartbeats[alloc_id]
        heartbeat, oversized = parse_heartbeat(beat), len(beat) > HEARTBEAT_MAX_BYTES
        if memo is not None:
            memo.seen[alloc_id] = HeartbeatSeen(fingerprint, heartbeat, oversized)
        return heartbeat, oversized
    if memo is not None and alloc_id in memo.seen:
        # Left out because its fingerprint is the one we sent: the file did not change.
        seen = memo.seen[alloc_id]
        return seen.heartbeat, seen.oversized
    return None, False


def _brought_nothing(req: ReadRequest, raw: RawFiles) -> bool:
    """No heartbeat, events, skip measure or log came back for `req`'s allocation."""
    alloc_id = req.allocation_id
    return not (
        alloc_id in raw.heartbeats
        or raw.events.get(alloc_id)
        or alloc_id in raw.skips
        or alloc_id in raw.logs
    )


def files_from_raw(req: ReadRequest, raw: RawFiles, memo: HeartbeatMemo | None) -> AllocationFiles:
    """What allocation `req` said this cycle, from the bytes the carrier brought back."""
    if memo is not None and _brought_nothing(req, raw):
        kept = memo.quiet.get(req.allocation_id)
        # Its heartbeat is the memo's (kept is replaced whenever a heartbeat is parsed).
        if (
            kept is not None
            and kept.events_offset == req.events_offset
            and kept.events_skipping == req.skipping
        ):
            return kept
    files = _build_files(req, raw, memo)
    if memo is not None:
        # A log tail counts even when empty ([] is not the None a read without one gives).
        news = files.events or files.oversized_lines or files.unusable_lines
        if news or files.log_tail is not None:
            memo.quiet.pop(req.allocation_id, None)
        else:
            memo.quiet[req.allocation_id] = files
    return files


def _build_files(req: ReadRequest, raw: RawFiles, memo: HeartbeatMemo | None) -> AllocationFiles:
    # Built whole, not assigned field by field: a pydantic attribute set costs as much as a
    # small model, and this runs for every allocation every cycle.
    heartbeat, oversized = _heartbeat_of(raw, memo, req.allocation_id)
    files = AllocationFiles(
        allocation_id=req.allocation_id,
        heartbeat=heartbeat,
        heartbeat_oversized=oversized,
        events_offset=req.events_offset,
        events_skipping=req.skipping,
    )
    if req.skipping:
        if req.allocation_id in raw.skips:
            skip_oversized(files, raw.skips[req.allocation_id], req.events_offset)
    else:
        read_events_window(files, raw.events.get(req.allocation_id, b""), req.events_offset)
    if req.allocation_id in raw.logs:
        text = raw.logs[req.allocation_id].decode(errors="replace")
        files.log_tail = text.splitlines()[-LOG_TAIL_LINES:]
    return files
