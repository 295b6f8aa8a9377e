"""The one batched read of a cluster per cycle (invariant 6).

One bash script: the scheduler's query (squeue, sacct for vanished jobs), then for every known
allocation its heartbeat.json, the bytes of events.jsonl after the stored offset and, when
asked, the tail of worker.log. Payloads travel base64-encoded between marker lines that carry
a random token, so no file content can be mistaken for a marker.

Every file is read through a cap, so whatever a worker writes, one allocation costs a poll at
most HEARTBEAT_MAX_BYTES + 1 + EVENTS_WINDOW_BYTES + LOG_TAIL_BYTES bytes (base64 adds a
third). An events.jsonl line that does not fit the window is skipped on the cluster's side
(the offset moves past its end) and counted, never retried.
"""

from __future__ import annotations

import base64
import binascii
import secrets
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


class ReadRequest(BaseModel):
    allocation_id: str
    events_offset: int = 0
    want_log: bool = False
    skipping: bool = False  # the offset is inside an oversized line: find its end first


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
) -> tuple[str, str]:
    """(script, token). One function call per allocation keeps the script small at scale.
    With `sweep_keep`, the script also runs `credentials_sweep` (once after a daemon start)."""
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
    for req in requests:
        # Allocation ids are [0-9a-z] by construction (relaymd.ids); still never trusted raw.
        if not req.allocation_id.isalnum():
            raise ValueError(f"unsafe allocation id {req.allocation_id!r}")
        lines.append(
            f"r {req.allocation_id} {int(req.events_offset)} {int(req.want_log)}"
            f" {int(req.skipping)}"
        )
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


def parse_read_output(
    stdout: str,
    token: str,
    cluster: str,
    requests: list[ReadRequest],
    parse_query: Any,
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
    for req in requests:
        files = AllocationFiles(
            allocation_id=req.allocation_id,
            events_offset=req.events_offset,
            events_skipping=req.skipping,
        )
        beat = _b64("".join(sections.get(("HB", req.allocation_id), [])))
        files.heartbeat = _heartbeat(beat)
        files.heartbeat_oversized = len(beat) > HEARTBEAT_MAX_BYTES
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
    return snapshot
