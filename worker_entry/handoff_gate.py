"""A pre-written successor assignment waits for its predecessor's handoff (ADR 0009).

The daemon writes the assignment of epoch E+1 before epoch E has handed off; the assignment
names the job and E. The worker polls one object, `jobs/<job>/handoff/<E>.json`, which the
epoch-E worker writes after its final checkpoint verified. The marker is untrusted input: it
must name this job and exactly epoch E, its checkpoint must be of epoch E and must verify
(manifest sha256 and sizes) before the assignment is resolved to resume from it. A checkpoint
of any older epoch is never accepted. Nothing else is ever resumed from under the gate.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ValidationError

from relaymd.mailbox.models import Assignment
from relaymd.models import HandoffMarker, OpenMMSettings
from relaymd.storage import keys
from relaymd.storage.base import ObjectNotFound, ObjectStore, StorageError
from relaymd.storage.checkpoints import verify_checkpoint
from worker_entry.logging import get_logger

log = get_logger(__name__)


def preload_engine(assignment: Assignment) -> None:
    """Import the engine's libraries while waiting (OpenMM takes about a second), so the
    handoff gap does not pay for it. A failure is left to the segment to report."""
    if isinstance(assignment.engine, OpenMMSettings):
        try:
            import openmm.app  # noqa: F401
        except ImportError as exc:
            log.warning("engine_preload_failed", error=str(exc))


def gate_expired(assignment: Assignment, now: datetime | None = None) -> bool:
    gate = assignment.after_handoff
    if gate is None:
        return False
    return (now or datetime.now(UTC)) >= gate.expires_at


def resolve_gate(store: ObjectStore, assignment: Assignment) -> Assignment | None:
    """The assignment resuming from the verified handoff checkpoint, or None (not yet)."""
    gate = assignment.after_handoff
    if gate is None:
        return assignment
    key = keys.handoff_key(gate.job_id, gate.after_epoch)
    try:
        data = store.get_bytes(key)
    except ObjectNotFound:
        return None
    except StorageError as exc:
        log.warning("handoff_marker_unreadable", key=key, error=str(exc))
        return None
    try:
        marker = HandoffMarker.model_validate_json(data)
    except ValidationError as exc:
        log.warning("handoff_marker_malformed", key=key, error=str(exc))
        return None
    ref = marker.checkpoint
    expected_prefix = keys.checkpoint_prefix(gate.job_id, gate.after_epoch, ref.seq)
    if (
        gate.job_id != assignment.job_id
        or marker.job_id != gate.job_id
        or marker.epoch != gate.after_epoch
        or ref.epoch != gate.after_epoch
        or ref.prefix != expected_prefix
        or assignment.epoch != gate.after_epoch + 1
    ):
        log.warning(
            "handoff_marker_rejected",
            key=key,
            marker_epoch=marker.epoch,
            checkpoint_epoch=ref.epoch,
            prefix=ref.prefix,
        )
        return None
    try:
        verify_checkpoint(store, ref)
    except (StorageError, ValidationError, ValueError) as exc:
        log.warning("handoff_checkpoint_unverified", prefix=ref.prefix, error=str(exc))
        return None
    log.info("handoff_checkpoint_found", job_id=gate.job_id, epoch=gate.after_epoch, seq=ref.seq)
    return assignment.model_copy(update={"resume": ref, "fallbacks": [], "after_handoff": None})
