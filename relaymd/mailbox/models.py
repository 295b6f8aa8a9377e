"""The wire models of the mailbox (docs/architecture.md, "The mailbox protocol").

assignment.json and control.json (daemon writes), heartbeat.json and events.jsonl (worker
writes); where they live and what they are called is `relaymd.mailbox.layout`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from relaymd.models.allocation import GpuInfo
from relaymd.models.base import WireModel, utcnow
from relaymd.models.engines import EngineSettings
from relaymd.models.storage import CheckpointRef, ObjectRef

# Size limits of what a worker writes; the daemon skips (and counts) anything larger, so one
# file can never make a poll transfer megabytes or wedge the reading of events.
EVENT_LINE_MAX_BYTES = 32 * 1024  # one events.jsonl line, newline included
HEARTBEAT_MAX_BYTES = 16 * 1024


class HandoffGate(WireModel):
    """A pre-written successor assignment (ADR 0009) starts only from the handoff checkpoint
    that job `job_id`'s epoch `after_epoch` marks at `jobs/<job>/handoff/<epoch>.json`."""

    job_id: str
    after_epoch: int = Field(ge=1)
    # The worker drops the assignment (back to idle) if no handoff came by then.
    expires_at: datetime


class Assignment(WireModel):
    """The job an allocation must run. `epoch` is the fencing token (invariant 1)."""

    allocation_id: str
    job_id: str
    epoch: int = Field(ge=1)
    title: str = ""
    engine: EngineSettings
    bundle: ObjectRef
    resume: CheckpointRef | None = None
    # Older verified checkpoints, newest first: fallbacks when `resume` fails verification.
    fallbacks: list[CheckpointRef] = Field(default_factory=list)
    checkpoint_interval_s: float = Field(600.0, gt=0)
    issued_at: datetime = Field(default_factory=utcnow)
    # Set on a pre-written successor: wait for the predecessor's handoff, resume from it.
    after_handoff: HandoffGate | None = None
    # GPU slots of this allocation's group the job runs on (ADR 0026): indices into
    # RELAYMD_ALLOCATION_DEVICES; empty means this slot's own device only.
    devices: list[int] = Field(default_factory=list)


class ControlAction(StrEnum):
    STOP = "stop"  # checkpoint, upload, report `stopped`, exit
    DRAIN = "drain"  # finish or hand off the current job, take no new one
    # GPU slots (ADR 0026): `hold` keeps an idle slot's worker (no idle timeout, no GPU use)
    # while its GPU serves the lead slot's multi-GPU job; `kill` asks the slot supervisor to
    # SIGKILL this slot's worker alone (a hung slot in a group whose other slots still work).
    HOLD = "hold"
    KILL = "kill"


class Control(WireModel):
    action: ControlAction
    job_id: str | None = None
    epoch: int | None = None
    reason: str = ""
    issued_at: datetime = Field(default_factory=utcnow)


class WorkerState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    PREPARING = "preparing"
    RUNNING = "running"
    STOPPING = "stopping"
    EXITING = "exiting"
    HELD = "held"  # idle, its GPU lent to another slot's multi-GPU job (control `hold`)


class Heartbeat(WireModel):
    """Rewritten every H seconds; liveness is judged by `seq` moving (invariant 5)."""

    allocation_id: str
    seq: int = Field(ge=0)
    state: WorkerState
    job_id: str | None = None
    epoch: int | None = None
    step: int = 0
    total_steps: int | None = None
    progress: float | None = Field(None, ge=0, le=1)
    ns_per_day: float | None = None
    last_checkpoint: CheckpointRef | None = None
    gpus: list[GpuInfo] = Field(default_factory=list)
    platform: str | None = None
    deadline: datetime | None = None
    handoff_margin_s: float | None = None
    # Waiting on a pre-written assignment for the handoff of this epoch of `job_id`.
    awaiting_handoff_of: int | None = None
    # The CUDA_VISIBLE_DEVICES the job's engine runs with (the slot's own, or the lead's
    # widened set for a multi-GPU job); None without CUDA devices.
    cuda_visible_devices: str | None = None
    hostname: str = ""
    pid: int = 0
    worker_version: str = ""
    written_at: datetime = Field(default_factory=utcnow)
    # The provider machine it runs on (SaladCloud's SALAD_MACHINE_ID), matched against the
    # provider's instance list (ADR 0025); None off such providers.
    machine_id: str | None = None


class EventKind(StrEnum):
    STARTED = "started"
    CHECKPOINT = "checkpoint"
    CHECKPOINT_FALLBACK = "checkpoint_fallback"
    HANDOFF = "handoff"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"
    IDLE_EXIT = "idle_exit"
    # Written by the slot supervisor (not the worker) when a slot's worker process exited:
    # `exit_code` (negative: the signal), ADR 0026.
    SLOT_EXITED = "slot_exited"


class WorkerEvent(WireModel):
    """One line of events.jsonl; the daemon catches up from a stored byte offset."""

    kind: EventKind
    allocation_id: str
    job_id: str | None = None
    epoch: int | None = None
    step: int | None = None
    checkpoint: CheckpointRef | None = None
    resumed_from: Literal["checkpoint", "state_xml", "start"] | None = None
    reason: str | None = None
    # Application failures are retried; resumable ones (a lost upload, a node problem) requeue.
    retryable: bool = False
    log_tail: list[str] = Field(default_factory=list)
    # `started`: the engine's CUDA_VISIBLE_DEVICES; `slot_exited`: the worker's exit code.
    cuda_visible_devices: str | None = None
    exit_code: int | None = None
    at: datetime = Field(default_factory=utcnow)
