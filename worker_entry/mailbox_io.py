"""The worker's side of the allocation folder (docs/architecture.md, "The mailbox protocol")."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import orjson
from pydantic import BaseModel, ValidationError

from relaymd.mailbox.files import append_event, atomic_write_model, read_model
from relaymd.mailbox.layout import ASSIGNMENT_FILE, CONTROL_FILE, EVENTS_FILE, HEARTBEAT_FILE
from relaymd.mailbox.models import (
    EVENT_LINE_MAX_BYTES,
    HEARTBEAT_MAX_BYTES,
    Assignment,
    Control,
    ControlAction,
    Heartbeat,
    WorkerEvent,
)
from worker_entry.logging import get_logger

log = get_logger(__name__)

# An assignment that stays unparsable this long is malformed, not half-written.
GARBLED_GRACE_S = 3.0
# What one event may carry of free text: longer strings are cut, marked as cut.
REASON_MAX_CHARS = 2000
LOG_LINE_MAX_CHARS = 400


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f" [... {len(text) - limit} characters cut by relaymd-worker]"


def _line_bytes(event: WorkerEvent) -> int:
    return len(event.model_dump_json().encode()) + 1  # + the newline


def bounded_event(event: WorkerEvent) -> WorkerEvent:
    """`event` cut to fit one events.jsonl line of EVENT_LINE_MAX_BYTES: the daemon skips
    longer lines, so an engine that printed megabytes must not take its failure with it.
    Long strings are cut (with a marker), then the oldest log lines dropped."""
    if _line_bytes(event) <= EVENT_LINE_MAX_BYTES:
        return event
    tail = [_cut(line, LOG_LINE_MAX_CHARS) for line in event.log_tail]
    reason = _cut(event.reason, REASON_MAX_CHARS) if event.reason is not None else None
    event = event.model_copy(update={"reason": reason, "log_tail": tail})
    dropped = 0
    lines = list(event.log_tail)
    while _line_bytes(event) > EVENT_LINE_MAX_BYTES and lines:
        lines.pop(0)
        dropped += 1
        marker = f"[... {dropped} earlier log lines cut by relaymd-worker]"
        event = event.model_copy(update={"log_tail": [marker, *lines]})
    return event


def bounded_heartbeat(heartbeat: Heartbeat) -> Heartbeat:
    """`heartbeat` within HEARTBEAT_MAX_BYTES (the daemon ignores a larger one)."""
    if len(heartbeat.model_dump_json().encode()) <= HEARTBEAT_MAX_BYTES:
        return heartbeat
    return heartbeat.model_copy(
        update={
            "gpus": heartbeat.gpus[:16],
            "hostname": heartbeat.hostname[:255],
            "platform": (heartbeat.platform or "")[:64] or None,
            "worker_version": heartbeat.worker_version[:64],
        }
    )


class AssignmentRead(BaseModel):
    """One look at assignment.json: nothing, a valid assignment, or a malformed one."""

    digest: str
    assignment: Assignment | None = None
    error: str | None = None
    job_id: str | None = None
    epoch: int | None = None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class Mailbox:
    def __init__(self, alloc_dir: Path) -> None:
        self.dir = alloc_dir
        self.allocation_id = alloc_dir.name
        self._events_lock = threading.Lock()

    def append(self, event: WorkerEvent) -> None:
        event = bounded_event(event)
        with self._events_lock:
            append_event(self.dir / EVENTS_FILE, event)
        log.info(
            "worker_event",
            kind=event.kind.value,
            job_id=event.job_id,
            epoch=event.epoch,
            step=event.step,
            reason=event.reason,
        )

    def write_heartbeat(self, heartbeat: Heartbeat) -> None:
        atomic_write_model(self.dir / HEARTBEAT_FILE, bounded_heartbeat(heartbeat))

    def read_control(self) -> Control | None:
        return read_model(self.dir / CONTROL_FILE, Control)

    def applicable_control(self, job_id: str | None, epoch: int | None) -> ControlAction | None:
        """A control with no job id applies to whatever runs; otherwise it must name this one."""
        control = self.read_control()
        if control is None:
            return None
        if control.job_id is not None and control.job_id != job_id:
            return None
        if control.epoch is not None and control.epoch != epoch:
            return None
        return control.action

    def read_assignment(self) -> AssignmentRead | None:
        """None when absent or (so far) unparsable JSON; otherwise the parse result."""
        try:
            raw = (self.dir / ASSIGNMENT_FILE).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("assignment_unreadable", error=str(exc))
            return None
        digest = hashlib.sha256(raw).hexdigest()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return AssignmentRead(digest=digest, error=f"{ASSIGNMENT_FILE} is not JSON: {exc}")
        if not isinstance(data, dict):
            return AssignmentRead(digest=digest, error=f"{ASSIGNMENT_FILE} is not a JSON object")
        job_id = data.get("job_id") if isinstance(data.get("job_id"), str) else None
        epoch = data.get("epoch") if isinstance(data.get("epoch"), int) else None
        try:
            assignment = Assignment.model_validate(data)
        except ValidationError as exc:
            return AssignmentRead(
                digest=digest,
                error=f"malformed {ASSIGNMENT_FILE}: {_describe(exc)}",
                job_id=job_id,
                epoch=epoch,
            )
        return AssignmentRead(digest=digest, assignment=assignment, job_id=job_id, epoch=epoch)
