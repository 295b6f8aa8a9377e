"""Checkpoint retention: keep the newest N verified checkpoints of a job (invariant 2).

Runs only after the resume pointer moved to a newly verified checkpoint; deletes only
checkpoints strictly older than the pointer, never the pointer itself, and keeps the N-1
newest of those as fallbacks.
"""

from __future__ import annotations

from relaymd.models import CheckpointRef
from relaymd.storage.base import ObjectStore
from relaymd.storage.checkpoints import delete_checkpoint, list_checkpoints


def to_delete(
    checkpoints: list[CheckpointRef], pointer: CheckpointRef, keep: int
) -> list[CheckpointRef]:
    older = sorted(
        (c for c in checkpoints if (c.epoch, c.seq) < (pointer.epoch, pointer.seq)),
        key=lambda c: (c.epoch, c.seq),
        reverse=True,
    )
    return older[max(keep - 1, 0) :]


def apply_retention(
    store: ObjectStore, job_id: str, pointer: CheckpointRef, keep: int
) -> list[CheckpointRef]:
    doomed = to_delete(list_checkpoints(store, job_id), pointer, keep)
    for ref in doomed:
        delete_checkpoint(store, ref)
    return doomed
