"""The one batched read of a cluster per cycle (invariant 6).

One bash script: the scheduler's query (squeue, sacct for vanished jobs), then for every known
allocation its heartbeat.json, the bytes of events.jsonl after the stored offset and, when
asked, the tail of worker.log. Payloads travel base64-encoded between marker lines that carry
a random token, so no file content can be mistaken for a marker.

Where the login node has python3, one `python3 -I -S` process reads every folder
(relaymd.mailbox.login_read_program, ADR 0012) and returns only heartbeats whose content
fingerprint differs from the one the daemon sent (the daemon keeps its last parsed copy in a
HeartbeatMemo) and events files that grew. Without python3 the per-allocation bash function
below runs instead: same answers, a few processes per allocation.

Every file is read through a cap, so whatever a worker writes, one allocation costs a poll at
most HEARTBEAT_MAX_BYTES + 1 + EVENTS_WINDOW_BYTES + LOG_TAIL_BYTES bytes (base64 adds a
third). An events.jsonl line that does not fit the window is skipped on the cluster's side
(the offset moves past its end) and counted, never retried. What comes back is made into
AllocationFiles by relaymd.mailbox.reading, as for any carrier.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import shlex
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from relaymd.mailbox.carrier import ClusterSnapshot, ReadRequest
from relaymd.mailbox.layout import (
    CREDENTIALS_FILE,
    EVENTS_FILE,
    HEARTBEAT_FILE,
    WORKER_LOG_FILE,
    alloc_root,
)
from relaymd.mailbox.models import HEARTBEAT_MAX_BYTES
from relaymd.mailbox.reading import (
    EVENTS_WINDOW_BYTES,
    LOG_TAIL_BYTES,
    SKIP_SCAN_BYTES,
    HeartbeatMemo,
    RawFiles,
    files_from_raw,
)
from relaymd.mailbox.shell import check_alphanumeric, shell_path

SWEEP_AGE_MIN = 10

# The login-node program, sent as text; it imports nothing from RelayMD.
LOGIN_PROGRAM = (Path(__file__).parent / "login_read_program.py").read_text()
# What the zlib'd records of one poll may expand to: every cap of every allocation, and more
# than a poll can legitimately hold is refused (a decompression bomb is not news).
RECORD_OVERHEAD_BYTES = 128

# r <alloc> <events offset> <want log> <skipping>: one folder, without python3.
_READ_FUNCTION = [
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
]


def credentials_sweep(keep: list[str]) -> list[str]:
    """Script lines removing the credentials file of every allocation folder not in `keep`
    (the live allocations of every cluster) once it is SWEEP_AGE_MIN minutes old: what an
    ended allocation still holds after a daemon crash between its end and the write that
    would have removed it. A file that young may belong to a submit in flight elsewhere."""
    for alloc_id in keep:
        check_alphanumeric(alloc_id)
    return [
        f"K=' {' '.join(keep)} '",
        f'find "$R" -mindepth 2 -maxdepth 2 -name {CREDENTIALS_FILE} -mmin +{SWEEP_AGE_MIN}'
        " 2>/dev/null | while IFS= read -r f; do",
        "  a=${f%/*}; a=${a##*/}",
        '  case "$K" in *" $a "*) ;; *) rm -f "$f" ;; esac',
        "done",
    ]


def _query_lines(query_snippet: str) -> list[str]:
    """The scheduler's query, its exit status and (capped) stderr between markers."""
    return [
        "printf '@@%s QUERY\\n' \"$T\"",
        "{ qerr=$( { (",
        query_snippet,
        ") </dev/null; } 2>&1 1>&3 ); qrc=$?; } 3>&1",
        'printf \'\\n@@%s QUERY_RC %s\\n\' "$T" "$qrc"',
        "printf '%s' \"$qerr\" | head -c 2000 | base64 -w0",
        "printf '\\n'",
    ]


def _folder_lines(token: str, requests: list[ReadRequest], memo: HeartbeatMemo | None) -> list[str]:
    """One python3 for every folder when there is one; else the bash function per folder."""
    calls: list[str] = []
    asks: list[str] = []
    for req in requests:
        check_alphanumeric(req.allocation_id)
        args = f"{int(req.events_offset)} {int(req.want_log)} {int(req.skipping)}"
        calls.append(f"r {req.allocation_id} {args}")
        known = memo.fingerprint(req.allocation_id) if memo else "-unknown"
        asks.append(f"{req.allocation_id} {args} {known}")
    end = f"RELAYMD_READ_{token}"
    caps = f"{HEARTBEAT_MAX_BYTES + 1} {EVENTS_WINDOW_BYTES} {SKIP_SCAN_BYTES} {LOG_TAIL_BYTES}"
    return [
        f"P={shlex.quote(LOGIN_PROGRAM)}",
        'if command -v python3 >/dev/null 2>&1 && python3 -I -S -c "$P" "$R" "$T" '
        f"{caps} <<'{end}'",
        *asks,
        end,
        "then :",
        "else",
        *calls,
        "fi",
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
    lines = ["set -u", f"T={token}", f"R={shell_path(alloc_root(scratch))}", *_READ_FUNCTION]
    lines.extend(_query_lines(query_snippet))
    if requests:
        lines.extend(_folder_lines(token, requests, memo))
    if sweep_keep is not None:
        lines.extend(credentials_sweep(sweep_keep))
    lines.append("printf '@@%s END\\n' \"$T\"")
    return "\n".join(lines) + "\n", token


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=False)
    except (binascii.Error, ValueError):
        return b""


FINGERPRINT = re.compile(r"-|[0-9]{1,9}\.[0-9a-f]{16}")


_RECORD_CAPS = {"HB": HEARTBEAT_MAX_BYTES + 1, "EV": EVENTS_WINDOW_BYTES, "LOG": LOG_TAIL_BYTES}


def parse_login_records(text: str, requests: list[ReadRequest]) -> RawFiles | None:
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
    records = RawFiles()
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


class _Sections:
    """The script's output split at its `@@<token> KIND [alloc]` marker lines."""

    def __init__(self, stdout: str, token: str) -> None:
        marker = f"@@{token} "
        self.text: dict[tuple[str, str], list[str]] = {}
        self.query_rc: int | None = None
        self.complete = False
        current: tuple[str, str] | None = None
        for line in stdout.splitlines():
            if line.startswith(marker):
                parts = line[len(marker) :].split()
                kind = parts[0] if parts else ""
                if kind == "END":
                    self.complete = True
                    current = None
                    continue
                if kind == "QUERY_RC":
                    rc = parts[1] if len(parts) > 1 else ""
                    self.query_rc = int(rc) if rc.isdigit() else None
                current = (kind, parts[1] if len(parts) > 1 and kind != "QUERY_RC" else "")
                self.text.setdefault(current, [])
                continue
            if current is not None:
                self.text[current].append(line)

    def joined(self, kind: str, alloc_id: str = "", sep: str = "") -> str:
        return sep.join(self.text.get((kind, alloc_id), []))

    def has(self, kind: str, alloc_id: str = "") -> bool:
        return (kind, alloc_id) in self.text


def _bash_raw(sections: _Sections, requests: list[ReadRequest]) -> RawFiles:
    """The bash fallback's sections as RawFiles: every heartbeat is sent, with no fingerprint
    (so the next poll sends it again)."""
    raw = RawFiles()
    for req in requests:
        alloc_id = req.allocation_id
        raw.heartbeats[alloc_id] = ("", _b64(sections.joined("HB", alloc_id)))
        raw.events[alloc_id] = _b64(sections.joined("EV", alloc_id))
        if sections.has("SK", alloc_id):
            raw.skips[alloc_id] = sections.joined("SK", alloc_id)
        if sections.has("LOG", alloc_id):
            raw.logs[alloc_id] = _b64(sections.joined("LOG", alloc_id))
    return raw


def parse_read_output(
    stdout: str,
    token: str,
    cluster: str,
    requests: list[ReadRequest],
    parse_query: Callable[[str], Iterable[Any]],
    memo: HeartbeatMemo | None = None,
) -> ClusterSnapshot:
    """Split the script's output at its markers and parse every section."""
    sections = _Sections(stdout, token)
    query_err = _b64(sections.joined("QUERY_RC")).decode(errors="replace")
    snapshot = ClusterSnapshot(
        cluster=cluster, query_ok=sections.complete and sections.query_rc == 0
    )
    if not snapshot.query_ok:
        snapshot.query_error = (
            query_err.strip() or f"scheduler query exit status {sections.query_rc}"
        )
    else:
        for job in parse_query(sections.joined("QUERY", sep="\n")):
            if job.allocation_id:
                snapshot.scheduler_jobs[job.allocation_id] = job
    raw = None
    if sections.has("PY"):
        raw = parse_login_records(sections.joined("PY"), requests)
    if raw is None:
        raw = _bash_raw(sections, requests)
    for req in requests:
        snapshot.files[req.allocation_id] = files_from_raw(req, raw, memo)
    if memo is not None:
        memo.keep_only({r.allocation_id for r in requests})
    return snapshot
