"""The one batched read of a cluster per cycle (invariant 6).

One bash script: the scheduler's query (squeue, sacct for vanished jobs), then for every known
allocation its heartbeat.json, the bytes of events.jsonl after the stored offset and, when
asked, the tail of worker.log. Payloads travel base64-encoded between marker lines that carry
a random token, so no file content can be mistaken for a marker.

Where the login node has python3, one `python3 -I -S` process reads every folder
(relaymd.daemon.login_read_program, ADR 0012) and returns only heartbeats whose content
fingerprint differs from the one the daemon sent (the daemon keeps its last parsed copy in a
HeartbeatMemo) and events files that grew. Without python3 the per-allocation bash function
below runs instead: same answers, a few processes per allocation.

Every file is read through a cap, so whatever a worker writes, one allocation costs a poll at
most HEARTBEAT_MAX_BYTES + 1 + EVENTS_WINDOW_BYTES + LOG_TAIL_BYTES bytes (base64 adds a
third). An events.jsonl line that does not fit the window is skipped on the cluster's side
(the offset moves past its end) and counted, never retried.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import shlex
import zlib
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, Field, ValidationError

from relaymd.logging import get_logger
from relaymd.models import (
    CREDENTIALS_FILE,
    EVENT_LINE_MAX_BYTES,
    EVENTS_FILE,
    HEARTBEAT_FILE,
    HEARTBEAT_MAX_BYTES,
    WORKER_LOG_FILE,
    Heartbeat,
    WorkerEvent,
)
from relaymd.scheduler.base import alloc_root
from relaymd.scheduler.shell import shell_path

log = get_logger(__name__)

# Per allocation per cycle; the rest follows next cycle. Four times the longest line a worker
# writes, so a window always holds at least one whole line.
EVENTS_WINDOW_BYTES = 4 * EVENT_LINE_MAX_BYTES
# How far past an oversized line's start the cluster looks for its end, in one poll.
SKIP_SCAN_BYTES = 64 << 20
LOG_TAIL_BYTES = 4096
LOG_TAIL_LINES = 40
SWEEP_AGE_MIN = 10


# The login-node program, sent as text; it imports nothing from RelayMD.
LOGIN_PROGRAM = (Path(__file__).parent / "login_read_program.py").read_text()
# What the zlib'd records of one poll may expand to: every cap of every allocation, and more
# than a poll can legitimately hold is refused (a decompression bomb is not news).
RECORD_OVERHEAD_BYTES = 128


class ReadRequest(BaseModel):
    allocation_id: str
    events_offset: int = 0
    want_log: bool = False
    skipping: bool = False  # the offset is inside an oversized line: find its end first


class HeartbeatSeen(BaseModel):
    """The daemon's last parsed copy of one heartbeat.json and the fingerprint it had."""

    fingerprint: str = ""  # "" when read by the fallback (no fingerprint): always re-sent
    heartbeat: Heartbeat | None = None
    oversized: bool = False


class HeartbeatMemo:
    """Per cluster: what each allocation's heartbeat said last poll. The login node leaves
    out a heartbeat whose fingerprint is unchanged, and this copy stands in for it; an
    unchanged file means an unchanged seq, so liveness (on the daemon's clock) still ages."""

    def __init__(self) -> None:
        self.seen: dict[str, HeartbeatSeen] = {}

    def fingerprint(self, alloc_id: str) -> str:
        seen = self.seen.get(alloc_id)
        return seen.fingerprint if seen and seen.fingerprint else "-unknown"

    def keep_only(self, alloc_ids: set[str]) -> None:
        for alloc_id in set(self.seen) - alloc_ids:
            del self.seen[alloc_id]


class AllocationFiles(BaseModel):
    """What one allocation's folder said this cycle. Missing/garbled files are None/empty."""

    allocation_id: str
    heartbeat: Heartbeat | None = None
    events: list[WorkerEvent] = Field(default_factory=list)
    events_offset: int = 0  # offset after the complete lines consumed
    events_skipping: bool = False  # the new offset is inside an oversized line
    oversized_lines: int = 0  # lines over EVENT_LINE_MAX_BYTES skipped this cycle
    unusable_lines: int = 0  # complete lines that are not an event of this allocation
    heartbeat_oversized: bool = False
    log_tail: list[str] | None = None


class ClusterSnapshot(BaseModel):
    cluster: str
    query_ok: bool
    query_error: str = ""
    # allocation id -> the scheduler's view (relaymd.scheduler.SchedulerJob)
    scheduler_jobs: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, AllocationFiles] = Field(default_factory=dict)


def credentials_sweep(keep: list[str]) -> list[str]:
    """Script lines removing the credentials file of every allocation folder not in `keep`
    (the live allocations of every cluster) once it is SWEEP_AGE_MIN minutes old: what an
    ended allocation still holds after a daemon crash between its end and the write that
    would have removed it. A file that young may belong to a submit in flight elsewhere."""
    for alloc_id in keep:
        if not alloc_id.isalnum():
            raise ValueError(f"unsafe allocation id {alloc_id!r}")
    return [
        f"K=' {' '.join(keep)} '",
        f'find "$R" -mindepth 2 -maxdepth 2 -name {CREDENTIALS_FILE} -mmin +{SWEEP_AGE_MIN}'
        " 2>/dev/null | while IFS= read -r f; do",
        "  a=${f%/*}; a=${a##*/}",
        '  case "$K" in *" $a "*) ;; *) rm -f "$f" ;; esac',
        "done",
    ]


def build_read_script(
    scratch: str,
    query_snippet: str,
    requests: list[ReadRequest],
    token: str | None = None,
    sweep_keep: list[str] | None = None,
    memo: HeartbeatMemo | None = None,
) -> tuple[str, str]:
    """(script, token). With `memo`, heartbeats whose fingerprint it holds come back only if
    they changed. With `sweep_keep`, the script also runs `credentials_sweep` (once after a
    daemon start)."""
    token = token or secrets.token_hex(8)
    root = shell_path(alloc_root(scratch))
    lines = [
        "set -u",
        f"T={token}",
        f"R={root}",
        # r <alloc> <events offset> <want log> <skipping>
        "r() {",
        '  d="$R/$1"; e="$d/' + EVENTS_FILE + '"',
        '  printf \'@@%s HB %s\\n\' "$T" "$1"',
        f'  [ -r "$d/{HEARTBEAT_FILE}" ] && head -c {HEARTBEAT_MAX_BYTES + 1}'
        f' "$d/{HEARTBEAT_FILE}" 2>/dev/null | base64 -w0',
        '  if [ "$4" = 1 ]; then',
        # Inside an oversized line: the length up to its newline (or all that is there) and
        # whether that last byte is the newline; no content travels.
        '    printf \'\\n@@%s SK %s\\n\' "$T" "$1"',
        '    if [ -r "$e" ]; then',
        f'      n=$(tail -c "+$(($2 + 1))" "$e" 2>/dev/null | head -c {SKIP_SCAN_BYTES}'
        " | LC_ALL=C tr -c '\\n' x | head -n 1 | wc -c)",
        '      l=x; [ "$n" -gt 0 ] && l=$(tail -c "+$(($2 + n))" "$e" 2>/dev/null | head -c 1'
        " | LC_ALL=C tr -c '\\n' x)",
        '      printf \'%s %s\' "$n" "${l:-nl}"',
        "    fi",
        "  else",
        '    printf \'\\n@@%s EV %s\\n\' "$T" "$1"',
        '    [ -r "$e" ] && tail -c "+$(($2 + 1))" "$e" 2>/dev/null'
        f" | head -c {EVENTS_WINDOW_BYTES} | base64 -w0",
        "  fi",
        "  printf '\\n'",
        '  if [ "$3" = 1 ]; then',
        '    printf \'@@%s LOG %s\\n\' "$T" "$1"',
        f'    [ -r "$d/{WORKER_LOG_FILE}" ] && tail -c {LOG_TAIL_BYTES} "$d/{WORKER_LOG_FILE}"'
        " 2>/dev/null | base64 -w0",
        "    printf '\\n'",
        "  fi",
        "}",
        "printf '@@%s QUERY\\n' \"$T\"",
        "{ qerr=$( { (",
        query_snippet,
        ") </dev/null; } 2>&1 1>&3 ); qrc=$?; } 3>&1",
        'printf \'\\n@@%s QUERY_RC %s\\n\' "$T" "$qrc"',
        "printf '%s' \"$qerr\" | head -c 2000 | base64 -w0",
        "printf '\\n'",
    ]
    calls: list[str] = []
    asks: list[str] = []
    for req in requests:
        # Allocation ids are [0-9a-z] by construction (relaymd.ids); still never trusted raw.
        if not req.allocation_id.isalnum():
            raise ValueError(f"unsafe allocation id {req.allocation_id!r}")
        args = f"{int(req.events_offset)} {int(req.want_log)} {int(req.skipping)}"
        calls.append(f"r {req.allocation_id} {args}")
        known = memo.fingerprint(req.allocation_id) if memo else "-unknown"
        asks.append(f"{req.allocation_id} {args} {known}")
    if requests:
        # One python3 for every folder when there is one; else the bash function per folder.
        end = f"RELAYMD_READ_{token}"
        caps = f"{HEARTBEAT_MAX_BYTES + 1} {EVENTS_WINDOW_BYTES} {SKIP_SCAN_BYTES} {LOG_TAIL_BYTES}"
        lines.append(f"P={shlex.quote(LOGIN_PROGRAM)}")
        lines.append(
            'if command -v python3 >/dev/null 2>&1 && python3 -I -S -c "$P" "$R" "$T" '
            f"{caps} <<'{end}'"
        )
        lines.extend([*asks, end, "then :", "else", *calls, "fi"])
    if sweep_keep is not None:
        lines.extend(credentials_sweep(sweep_keep))
    lines.append("printf '@@%s END\\n' \"$T\"")
    return "\n".join(lines) + "\n", token


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=False)
    except (binascii.Error, ValueError):
        return b""


def _heartbeat(data: bytes) -> Heartbeat | None:
    if not data or len(data) > HEARTBEAT_MAX_BYTES:
        return None
    try:
        return Heartbeat.model_validate(orjson.loads(data))
    except (orjson.JSONDecodeError, ValidationError):
        return None  # half-written or foreign: no news


def read_events_window(files: AllocationFiles, data: bytes, offset: int) -> None:
    """Parse `data` (at most EVENTS_WINDOW_BYTES of events.jsonl from byte `offset`) into
    `files`: complete lines become events, a trailing partial line waits for the next read,
    and a window with no newline at all starts an oversized line that is skipped."""
    files.events_offset = offset
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


def _skip(files: AllocationFiles, text: str, offset: int) -> None:
    """Move past the oversized line the cluster measured ("<bytes> nl|x")."""
    parts = text.split()
    files.events_skipping = True
    files.events_offset = offset
    if len(parts) != 2 or not parts[0].isdigit():
        return
    files.events_offset = offset + int(parts[0])
    files.events_skipping = parts[1] != "nl"


FINGERPRINT = re.compile(r"-|[0-9]{1,9}\.[0-9a-f]{16}")


class LoginRecords(BaseModel):
    """What the login-node program returned: only what changed since the daemon's last poll."""

    heartbeats: dict[str, tuple[str, bytes]] = Field(default_factory=dict)  # id -> (fp, bytes)
    events: dict[str, bytes] = Field(default_factory=dict)
    skips: dict[str, str] = Field(default_factory=dict)
    logs: dict[str, bytes] = Field(default_factory=dict)


_RECORD_CAPS = {"HB": HEARTBEAT_MAX_BYTES + 1, "EV": EVENTS_WINDOW_BYTES, "LOG": LOG_TAIL_BYTES}


def parse_login_records(text: str, requests: list[ReadRequest]) -> LoginRecords | None:
    """The program's records, or None when they are missing, garbled, over a cap, or name an
    allocation nobody asked about (then the bash sections, if any, are used)."""
    wanted = {r.allocation_id for r in requests}
    limit = len(requests) * (sum(_RECORD_CAPS.values()) + 4 * RECORD_OVERHEAD_BYTES) + 64
    try:
        inflater = zlib.decompressobj()
        body = inflater.decompress(base64.b64decode(text.strip(), validate=True), limit)
    except (binascii.Error, ValueError, zlib.error):
        return None
    if inflater.unconsumed_tail or not inflater.eof:
        return None
    records = LoginRecords()
    at = 0
    while True:
        nl = body.find(b"\n", at, at + RECORD_OVERHEAD_BYTES)
        if nl < 0:
            return None
        head = body[at:nl].decode("ascii", errors="replace").split()
        at = nl + 1
        if head == ["END"]:
            return records if at == len(body) else None
        if len(head) < 2 or head[1] not in wanted:
            return None
        kind, alloc_id = head[0], head[1]
        if kind == "SK" and len(head) <= 4:
            records.skips[alloc_id] = " ".join(head[2:])
            continue
        size_field = head[-1]
        if kind not in _RECORD_CAPS or not size_field.isdigit():
            return None
        size = int(size_field)
        if size > _RECORD_CAPS[kind] or body[at + size : at + size + 1] != b"\n":
            return None
        data = body[at : at + size]
        at += size + 1
        if kind == "HB" and len(head) == 4 and FINGERPRINT.fullmatch(head[2]):
            records.heartbeats[alloc_id] = (head[2], data)
        elif kind == "EV" and len(head) == 3:
            records.events[alloc_id] = data
        elif kind == "LOG" and len(head) == 3:
            records.logs[alloc_id] = data
        else:
            return None


def _files_from_records(
    req: ReadRequest, records: LoginRecords, memo: HeartbeatMemo | None
) -> AllocationFiles:
    files = AllocationFiles(
        allocation_id=req.allocation_id,
        events_offset=req.events_offset,
        events_skipping=req.skipping,
    )
    if req.allocation_id in records.heartbeats:
        fingerprint, beat = records.heartbeats[req.allocation_id]
        files.heartbeat = _heartbeat(beat)
        files.heartbeat_oversized = len(beat) > HEARTBEAT_MAX_BYTES
        if memo is not None:
            memo.seen[req.allocation_id] = HeartbeatSeen(
                fingerprint=fingerprint,
                heartbeat=files.heartbeat,
                oversized=files.heartbeat_oversized,
            )
    elif memo is not None and req.allocation_id in memo.seen:
        # Left out because its fingerprint is the one we sent: the file did not change.
        seen = memo.seen[req.allocation_id]
        files.heartbeat = seen.heartbeat
        files.heartbeat_oversized = seen.oversized
    if req.skipping:
        if req.allocation_id in records.skips:
            _skip(files, records.skips[req.allocation_id], req.events_offset)
    else:
        read_events_window(files, records.events.get(req.allocation_id, b""), req.events_offset)
    if req.allocation_id in records.logs:
        text = records.logs[req.allocation_id].decode(errors="replace")
        files.log_tail = text.splitlines()[-LOG_TAIL_LINES:]
    return files


def parse_read_output(
    stdout: str,
    token: str,
    cluster: str,
    requests: list[ReadRequest],
    parse_query: Any,
    memo: HeartbeatMemo | None = None,
) -> ClusterSnapshot:
    """Split the script's output at its markers and parse every section."""
    marker = f"@@{token} "
    sections: dict[tuple[str, str], list[str]] = {}
    current: tuple[str, str] | None = None
    query_rc: int | None = None
    complete = False
    for line in stdout.splitlines():
        if line.startswith(marker):
            parts = line[len(marker) :].split()
            kind = parts[0] if parts else ""
            if kind == "END":
                complete = True
                current = None
                continue
            if kind == "QUERY_RC":
                query_rc = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
            current = (kind, parts[1] if len(parts) > 1 and kind != "QUERY_RC" else "")
            sections.setdefault(current, [])
            continue
        if current is not None:
            sections[current].append(line)
    query_text = "\n".join(sections.get(("QUERY", ""), []))
    query_err = _b64("".join(sections.get(("QUERY_RC", ""), []))).decode(errors="replace")
    snapshot = ClusterSnapshot(cluster=cluster, query_ok=complete and query_rc == 0)
    if not snapshot.query_ok:
        snapshot.query_error = query_err.strip() or f"scheduler query exit status {query_rc}"
    else:
        for job in parse_query(query_text):
            if job.allocation_id:
                snapshot.scheduler_jobs[job.allocation_id] = job
    records = None
    if ("PY", "") in sections:
        records = parse_login_records("".join(sections[("PY", "")]), requests)
    for req in requests:
        if records is not None:
            snapshot.files[req.allocation_id] = _files_from_records(req, records, memo)
            continue
        files = AllocationFiles(
            allocation_id=req.allocation_id,
            events_offset=req.events_offset,
            events_skipping=req.skipping,
        )
        beat = _b64("".join(sections.get(("HB", req.allocation_id), [])))
        files.heartbeat = _heartbeat(beat)
        files.heartbeat_oversized = len(beat) > HEARTBEAT_MAX_BYTES
        if memo is not None:  # no fingerprint from bash: the next poll sends it again
            memo.seen[req.allocation_id] = HeartbeatSeen(
                heartbeat=files.heartbeat, oversized=files.heartbeat_oversized
            )
        if req.skipping:
            if ("SK", req.allocation_id) in sections:
                _skip(files, "".join(sections[("SK", req.allocation_id)]), req.events_offset)
        else:
            raw_events = _b64("".join(sections.get(("EV", req.allocation_id), [])))
            read_events_window(files, raw_events, req.events_offset)
        if ("LOG", req.allocation_id) in sections:
            text = _b64("".join(sections[("LOG", req.allocation_id)])).decode(errors="replace")
            files.log_tail = text.splitlines()[-LOG_TAIL_LINES:]
        snapshot.files[req.allocation_id] = files
    if memo is not None:
        memo.keep_only({r.allocation_id for r in requests})
    return snapshot
