"""Local mailbox files in an allocation folder (docs/architecture.md): atomic JSON, the event log.

Used by the worker (writer of heartbeat.json / events.jsonl) and the local transport. Readers
tolerate whatever a crash or a concurrent writer may leave: a missing, empty or half-written
JSON file reads as None; a half-written last event line waits for the next read.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from relaymd.mailbox.models import WorkerEvent

M = TypeVar("M", bound=BaseModel)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems (and platforms) refuse, which is fine.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so readers see the old content or the new, never a mix."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; set the final mode before the name becomes visible.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def atomic_write_model(path: Path, model: BaseModel, mode: int = 0o644) -> None:
    atomic_write_bytes(path, model.model_dump_json().encode(), mode)


def read_model(path: Path, model_cls: type[M]) -> M | None:
    """The model in `path`, or None when it is missing, empty, half-written or invalid."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not data.strip():
        return None
    try:
        return model_cls.model_validate_json(data)
    except ValidationError:
        return None


def append_event(path: Path, event: WorkerEvent) -> None:
    """Append one JSON line; a single write() on O_APPEND keeps concurrent lines whole."""
    line = event.model_dump_json().encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = 0
        while written < len(line):
            written += os.write(fd, line[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_events(data: bytes, base_offset: int) -> tuple[list[WorkerEvent], int]:
    """Events in the complete lines of `data` (which starts at byte `base_offset` of the file).

    Returns the events and the offset just past the last complete line; a trailing partial
    line is left for the next read. Unparsable complete lines are skipped, not retried.
    """
    end = data.rfind(b"\n")
    if end < 0:
        return [], base_offset
    events: list[WorkerEvent] = []
    for line in data[:end].split(b"\n"):
        if not line.strip():
            continue
        try:
            events.append(WorkerEvent.model_validate_json(line))
        except ValidationError:
            continue
    return events, base_offset + end + 1


def read_events(path: Path, offset: int) -> tuple[list[WorkerEvent], int]:
    """Events appended to `path` since byte `offset`; a missing file has none yet."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < offset:
                # The file was replaced by a shorter one: nothing valid at this offset.
                return [], offset
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    return parse_events(data, offset)
