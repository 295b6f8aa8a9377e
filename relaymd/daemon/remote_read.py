"""The one batched read of a cluster per cycle (invariant 6).

One bash script: the scheduler's query (squeue, sacct for vanished jobs), then for every known
allocation its heartbeat.json, the bytes of events.jsonl after the stored offset and, when
asked, the tail of worker.log. Payloads travel base64-encoded between marker lines that carry
a random token, so no file content can be mistaken for a marker.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

import orjson
from pydantic import BaseModel, Field, ValidationError

from relaymd.logging import get_logger
from relaymd.models import EVENTS_FILE, HEARTBEAT_FILE, WORKER_LOG_FILE, Heartbeat, WorkerEvent
from relaymd.scheduler.base import alloc_root
from relaymd.scheduler.shell import shell_path
from relaymd.storage.mailbox import parse_events

log = get_logger(__name__)

MAX_EVENT_BYTES = 1 << 20  # per allocation per cycle; the rest follows next cycle
LOG_TAIL_BYTES = 4096
LOG_TAIL_LINES = 40


class ReadRequest(BaseModel):
    allocation_id: str
    events_offset: int = 0
    want_log: bool = False


class AllocationFiles(BaseModel):
    """What one allocation's folder said this cycle. Missing/garbled files are None/empty."""

    allocation_id: str
    heartbeat: Heartbeat | None = None
    events: list[WorkerEvent] = Field(default_factory=list)
    events_offset: int = 0  # offset after the complete lines consumed
    log_tail: list[str] | None = None


class ClusterSnapshot(BaseModel):
    cluster: str
    query_ok: bool
    query_error: str = ""
    # allocation id -> the scheduler's view (relaymd.scheduler.SchedulerJob)
    scheduler_jobs: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, AllocationFiles] = Field(default_factory=dict)


def build_read_script(
    scratch: str, query_snippet: str, requests: list[ReadRequest], token: str | None = None
) -> tuple[str, str]:
    """(script, token). One function call per allocation keeps the script small at scale."""
    token = token or secrets.token_hex(8)
    root = shell_path(alloc_root(scratch))
    lines = [
        "set -u",
        f"T={token}",
        f"R={root}",
        "r() {",
        '  d="$R/$1"',
        '  printf \'@@%s HB %s\\n\' "$T" "$1"',
        f'  [ -r "$d/{HEARTBEAT_FILE}" ] && base64 -w0 < "$d/{HEARTBEAT_FILE}" 2>/dev/null',
        '  printf \'\\n@@%s EV %s\\n\' "$T" "$1"',
        f'  [ -r "$d/{EVENTS_FILE}" ] && tail -c "+$(($2 + 1))" "$d/{EVENTS_FILE}" 2>/dev/null'
        f" | head -c {MAX_EVENT_BYTES} | base64 -w0",
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
        lines.append(f"r {req.allocation_id} {int(req.events_offset)} {int(req.want_log)}")
    lines.append("printf '@@%s END\\n' \"$T\"")
    return "\n".join(lines) + "\n", token


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=False)
    except (binascii.Error, ValueError):
        return b""


def _heartbeat(data: bytes) -> Heartbeat | None:
    if not data:
        return None
    try:
        return Heartbeat.model_validate(orjson.loads(data))
    except (orjson.JSONDecodeError, ValidationError):
        return None  # half-written or foreign: no news


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
        files = AllocationFiles(allocation_id=req.allocation_id, events_offset=req.events_offset)
        files.heartbeat = _heartbeat(_b64("".join(sections.get(("HB", req.allocation_id), []))))
        raw_events = _b64("".join(sections.get(("EV", req.allocation_id), [])))
        if raw_events:
            events, new_offset = parse_events(raw_events, req.events_offset)
            files.events = [e for e in events if e.allocation_id == req.allocation_id]
            files.events_offset = new_offset
        if ("LOG", req.allocation_id) in sections:
            text = _b64("".join(sections[("LOG", req.allocation_id)])).decode(errors="replace")
            files.log_tail = text.splitlines()[-LOG_TAIL_LINES:]
        snapshot.files[req.allocation_id] = files
    return snapshot
