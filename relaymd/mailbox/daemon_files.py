"""What the daemon writes into mailboxes: payload bytes, built from committed rows.

Carrier-neutral: every carrier writes these FileWrites as they are.
"""

from __future__ import annotations

from relaymd.mailbox.carrier import FileWrite
from relaymd.mailbox.layout import ASSIGNMENT_FILE, CONTROL_FILE, CREDENTIALS_FILE
from relaymd.mailbox.models import (
    Assignment,
    Control,
    ControlAction,
    HandoffGate,
    Heartbeat,
    WorkerState,
)
from relaymd.models import Allocation, CheckpointRef, Job, OperatorRequest, StorageAccess


def credentials_file(alloc_id: str, access: StorageAccess) -> FileWrite:
    return _file(alloc_id, CREDENTIALS_FILE, access.credentials_json().encode())


def assignment_needed(job: Job, heartbeat: Heartbeat | None) -> bool:
    """Rewrite assignment.json until the worker shows it took this (job, epoch).

    Rewriting is idempotent (the worker runs an assignment only once per (job, epoch)), and it
    is what makes a crash between commit and write harmless.
    """
    if heartbeat is None:
        return True
    return not (heartbeat.job_id == job.id and heartbeat.epoch == job.epoch)


def _assignment(
    alloc: Allocation,
    job: Job,
    epoch: int,
    *,
    resume: CheckpointRef | None = None,
    fallbacks: list[CheckpointRef] | None = None,
    after_handoff: HandoffGate | None = None,
    devices: list[int] | None = None,
) -> FileWrite:
    """assignment.json for `job` under `epoch`: where to resume, or the gate to wait on."""
    assignment = Assignment(
        allocation_id=alloc.id,
        job_id=job.id,
        epoch=epoch,
        title=job.spec.title,
        engine=job.spec.engine,
        bundle=job.bundle,
        resume=resume,
        fallbacks=fallbacks or [],
        checkpoint_interval_s=job.spec.checkpoint_interval_s,
        after_handoff=after_handoff,
        devices=devices or [],
    )
    return _file(alloc.id, ASSIGNMENT_FILE, assignment.model_dump_json().encode())


def _file(alloc_id: str, name: str, data: bytes) -> FileWrite:
    return FileWrite(allocation_id=alloc_id, name=name, data=data, mode=0o600)


def assignment_file(alloc: Allocation, job: Job, devices: list[int] | None = None) -> FileWrite:
    """`devices`: the group's slots a multi-GPU job runs on, the lead's first (ADR 0026)."""
    return _assignment(
        alloc, job, job.epoch, resume=job.checkpoint, fallbacks=job.fallbacks, devices=devices
    )


def successor_needed(alloc: Allocation, heartbeat: Heartbeat | None) -> bool:
    """Rewrite a reserved allocation's gated assignment until its worker shows it waits on
    (or runs) the reserved (job, epoch)."""
    if heartbeat is None:
        return True
    return not (
        heartbeat.job_id == alloc.reserved_job_id and heartbeat.epoch == alloc.reserved_epoch
    )


def successor_file(alloc: Allocation, job: Job) -> FileWrite:
    """The pre-written assignment of a reserved successor (ADR 0009): no resume point of its
    own; the worker resumes only from the handoff checkpoint the gate names."""
    assert alloc.reserved_epoch is not None and alloc.reserved_until is not None
    gate = HandoffGate(
        job_id=job.id, after_epoch=alloc.reserved_epoch - 1, expires_at=alloc.reserved_until
    )
    return _assignment(alloc, job, alloc.reserved_epoch, after_handoff=gate)


def withdrawal_needed(alloc: Allocation, job: Job | None, heartbeat: Heartbeat | None) -> bool:
    """The worker waits on a pre-written assignment the daemon no longer holds for it."""
    if heartbeat is None or heartbeat.awaiting_handoff_of is None:
        return False
    if alloc.reserved_job_id is not None:
        return not (
            heartbeat.job_id == alloc.reserved_job_id and heartbeat.epoch == alloc.reserved_epoch
        )
    return not (
        job is not None
        and job.allocation_id == alloc.id
        and heartbeat.job_id == job.id
        and heartbeat.epoch == job.epoch
    )


def control_needed(heartbeat: Heartbeat | None) -> bool:
    return heartbeat is None or heartbeat.state not in (WorkerState.STOPPING, WorkerState.EXITING)


def control_file(alloc: Allocation, job: Job | None) -> FileWrite:
    if job is None and alloc.note:
        reason = alloc.note  # released: no job can use it
    elif job is not None and job.operator_request is OperatorRequest.CANCEL:
        reason = "cancelled by operator"
    elif job is not None and job.operator_request is OperatorRequest.REQUEUE:
        reason = "requeued by operator"
    else:
        reason = "stopped by the daemon (stale heartbeat or not needed)"
    control = Control(
        action=ControlAction.STOP,
        job_id=job.id if job else None,
        epoch=job.epoch if job else None,
        reason=reason,
    )
    return _file(alloc.id, CONTROL_FILE, control.model_dump_json().encode())


def slot_control_file(alloc: Allocation, action: ControlAction, reason: str) -> FileWrite:
    """A GPU slot's `hold` (its GPU lent to the lead slot's job) or `kill` (ADR 0026)."""
    control = Control(action=action, reason=reason)
    return _file(alloc.id, CONTROL_FILE, control.model_dump_json().encode())


def hold_needed(alloc: Allocation, heartbeat: Heartbeat | None) -> bool:
    """Write the `hold` control until the slot's worker says it is held (a stop wins)."""
    return (
        alloc.held_by is not None
        and alloc.stop_requested_at is None
        and (heartbeat is None or heartbeat.state is not WorkerState.HELD)
    )


def unhold_needed(alloc: Allocation, heartbeat: Heartbeat | None) -> bool:
    """A freed slot's worker still reports `held`: remove its control file."""
    return (
        alloc.held_by is None
        and heartbeat is not None
        and heartbeat.state is WorkerState.HELD
        and alloc.stop_requested_at is None
    )
