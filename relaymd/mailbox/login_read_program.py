# ruff: noqa: UP006, UP035, UP045
"""The program the read script runs on the login node with `python3 -I -S` (ADR 0012).

Standard library only and Python 3.6 syntax: it runs on whatever python3 a login node has.
One process reads every allocation folder: per allocation the heartbeat (capped), its
fingerprint, the events after the stored offset (one window) and, when asked, the log tail.
A heartbeat whose fingerprint equals the one the daemon sent is left out, as are events files
with nothing after the offset, so a quiet poll returns almost nothing. Files are opened, not
stat'ed, so NFS revalidates them on open (close-to-open consistency) and the fingerprint
hashes the content: a cached mtime cannot hide a rewrite.

stdin: one request per line, `<allocation id> <events offset> <want log 0|1> <skipping 0|1>
<known heartbeat fingerprint or ->`. argv: scratch allocation root, marker token, and the caps
(heartbeat, events window, skip scan, log tail bytes). stdout: `@@<token> PY`, then one line
of base64(zlib(records)), where a record is a header line followed by that many raw bytes:
`HB <id> <fingerprint> <n>`, `EV <id> <n>`, `SK <id> <n> <nl|x>`, `LOG <id> <n>`, and `END`.
Everything is written at once at the end, so a failure part-way prints no records.
"""

import base64
import hashlib
import os
import sys
import zlib
from typing import List, Optional, Tuple

CHUNK = 1 << 20


def read_at(path: str, offset: int, limit: int) -> Tuple[Optional[bytes], int]:
    """Up to `limit` bytes of `path` from `offset`, and the file's size (None, -1 if absent)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None, -1
    try:
        size = os.fstat(fd).st_size
        if offset < 0:  # a tail
            offset = max(0, size + offset)
        if size <= offset or limit <= 0:
            return b"", size
        os.lseek(fd, offset, os.SEEK_SET)
        parts: List[bytes] = []
        left = limit
        while left > 0:
            part = os.read(fd, min(left, CHUNK))
            if not part:
                break
            parts.append(part)
            left -= len(part)
        return b"".join(parts), size
    except OSError:
        return None, -1
    finally:
        os.close(fd)


def fingerprint(data: Optional[bytes]) -> str:
    if data is None:
        return "-"
    return f"{len(data)}.{hashlib.blake2b(data, digest_size=8).hexdigest()}"


def skip_scan(path: str, offset: int, cap: int) -> bytes:
    """Bytes up to and including the first newline after `offset` (at most `cap`), and
    whether the last of them is that newline: no content travels."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        count = 0
        while count < cap:
            part = os.read(fd, min(CHUNK, cap - count))
            if not part:
                break
            at = part.find(b"\n")
            if at >= 0:
                return b"%d nl" % (count + at + 1)
            count += len(part)
        return b"%d x" % count
    except OSError:
        return b""
    finally:
        os.close(fd)


def allocation_id_ok(value: str) -> bool:
    """Alphanumeric, or a GPU slot's `<group>-g<i>` (relaymd.ids)."""
    head, sep, tail = value.partition("-g")
    return head.isalnum() and (not sep or tail.isdigit())


def main() -> None:
    root, token = sys.argv[1], sys.argv[2]
    hb_cap, window, scan_cap, log_bytes = (int(v) for v in sys.argv[3:7])
    out: List[bytes] = []
    for line in sys.stdin.read().splitlines():
        fields = line.split()
        if len(fields) != 5 or not allocation_id_ok(fields[0]):
            continue
        alloc, offset, want_log, skipping, known = (
            fields[0],
            int(fields[1]),
            fields[2] == "1",
            fields[3] == "1",
            fields[4],
        )
        folder = os.path.join(root, alloc)
        head = alloc.encode()
        beat, _ = read_at(os.path.join(folder, "heartbeat.json"), 0, hb_cap)
        mark = fingerprint(beat)
        if mark != known:
            body = beat or b""
            out.append(b"HB %s %s %d\n%s\n" % (head, mark.encode(), len(body), body))
        events = os.path.join(folder, "events.jsonl")
        if skipping:
            out.append(b"SK %s %s\n" % (head, skip_scan(events, offset, scan_cap)))
        else:
            chunk, _ = read_at(events, offset, window)
            if chunk:
                out.append(b"EV %s %d\n%s\n" % (head, len(chunk), chunk))
        if want_log:
            tail, _ = read_at(os.path.join(folder, "worker.log"), -log_bytes, log_bytes)
            tail = tail or b""
            out.append(b"LOG %s %d\n%s\n" % (head, len(tail), tail))
    out.append(b"END\n")
    blob = base64.b64encode(zlib.compress(b"".join(out), 6))
    sys.stdout.buffer.write(b"@@" + token.encode() + b" PY\n" + blob + b"\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
