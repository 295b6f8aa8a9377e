"""What the daemon writes into allocation folders: payload bytes, built from committed rows."""

from __future__ import annotations

from relaymd.daemon.remote_write import FileWrite
from relaymd.models import (
    ASSIGNMENT_FILE,
    CONTROL_FILE,
    CREDENTIALS_FILE,
    Allocation,
    Assignment,
    Control,
    ControlAction,
    HandoffGate,
    Heartbeat,
    Job,
    OperatorRequest,
    StorageAccess,
    WorkerState,
)


def credentials_file(alloc_id: str, access: StorageAccess) -> FileWrite:
    return FileWrite(
        allocation_id=alloc_id,
        name=CREDENTIALS_FILE,
        data=access.credentials_json().encode(),
        mode=0o600,
    )


def assignment_needed(job: Job, heartbeat: Heartbeat | None) -> bool:
    """Rewrite assignment.json until the worker shows it took this (job, epoch).

    Rewriting is idempotent (the worker runs an assignment only once per (job, epoch)), and it
    is what makes a crash between commit and write harmless.
    """
    if heartbeat is None:
        return True
    return not (heartbeat.job_id == job.id and heartbeat.epoch == job.epoch)


def assignment_file(alloc: Allocation, job: Job) -> FileWrite:
    assignment = Assignment(
        allocation_id=alloc.id,
        job_id=job.id,
        epoch=job.epoch,
        title=job.spec.title,
        engine=job.spec.engine,
        bundle=job.bundle,
        resume=job.checkpoint,
        fallbacks=job.fallbacks,
        checkpoint_interval_s=job.spec.checkpoint_interval_s,
    )
    return FileWrite(
        allocation_id=alloc.id,
        name=ASSIGNMENT_FILE,
        data=assignment.model_dump_json().encode(),
        mode=0o600,
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
    assignment = Assignment(
        allocation_id=alloc.id,
        job_id=job.id,
        epoch=alloc.reserved_epoch,
        title=job.spec.title,
        engine=job.spec.engine,
        bundle=job.bundle,
        checkpoint_interval_s=job.spec.checkpoint_interval_s,
        after_handoff=HandoffGate(
            job_id=job.id, after_epoch=alloc.reserved_epoch - 1, expires_at=alloc.reserved_until
        ),
    )
    return FileWrite(
        allocation_id=alloc.id,
        name=ASSIGNMENT_FILE,
        data=assignment.model_dump_json().encode(),
        mode=0o600,
    )


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
    return FileWrite(
        allocation_id=alloc.id,
        name=CONTROL_FILE,
        data=control.model_dump_json().encode(),
        mode=0o600,
    )
