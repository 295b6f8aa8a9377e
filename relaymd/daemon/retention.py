"""Checkpoint retention: keep the newest N verified checkpoints of a job (invariant 2).

The job row carries the pointer and its N-1 fallbacks (the pointers it had before, newest
first); retention runs after the pointer moved and deletes only older checkpoints that are
neither, so whatever an assignment may name as a fallback is still in storage.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from relaymd.logging import get_logger
from relaymd.models import CheckpointRef, Job
from relaymd.storage import keys
from relaymd.storage.base import ObjectStore
from relaymd.storage.checkpoints import delete_checkpoint, list_checkpoints

if TYPE_CHECKING:
    from relaymd.state.async_store import AsyncStateStore

log = get_logger(__name__)


def advance_pointer(job: Job, ref: CheckpointRef, keep: int) -> Job:
    """`job` resuming from `ref`, its old pointer first among the (keep - 1) fallbacks."""
    older = [job.checkpoint] if job.checkpoint is not None else []
    fallbacks = [*older, *job.fallbacks][: max(keep - 1, 0)]
    return job.model_copy(update={"checkpoint": ref, "step": ref.step, "fallbacks": fallbacks})


def _key(ref: CheckpointRef) -> tuple[int, int]:
    return (ref.epoch, ref.seq)


def to_delete(checkpoints: list[CheckpointRef], job: Job) -> list[CheckpointRef]:
    """Checkpoints older than the pointer that are neither the pointer nor a fallback.

    Newer ones stay (not yet verified, or a fenced writer's); so does anything the job could
    still resume from. An older checkpoint never verified (a zombie epoch's) goes.
    """
    if job.checkpoint is None:
        return []
    pointer = _key(job.checkpoint)
    kept = {pointer, *(_key(ref) for ref in job.fallbacks)}
    return [c for c in checkpoints if _key(c) < pointer and _key(c) not in kept]


def apply_retention(store: ObjectStore, job: Job) -> list[CheckpointRef]:
    pointer = job.checkpoint
    if pointer is None or pointer.prefix != keys.checkpoint_prefix(
        job.id, pointer.epoch, pointer.seq
    ):
        # A pointer that is not the job's own folder (a row written before reports were
        # verified) says nothing about which checkpoints are old: delete nothing.
        return []
    doomed = to_delete(list_checkpoints(store, job.id), job)
    for ref in doomed:
        delete_checkpoint(store, ref)
    return doomed


async def prune_checkpoints(state: AsyncStateStore, store: ObjectStore, job_ids: list[str]) -> None:
    """Retention for the jobs whose pointer advanced this cycle, off the event loop.
    Housekeeping: a failure is logged and never fails a cycle."""
    for job_id in set(job_ids):
        job = await state.get_job(job_id)
        if job is None or job.checkpoint is None:
            continue
        try:
            deleted = await asyncio.to_thread(apply_retention, store, job)
        except Exception as exc:
            log.warning("retention_failed", job_id=job_id, error=str(exc))
            continue
        if deleted:
            log.info("checkpoints_pruned", job_id=job_id, deleted=len(deleted))
