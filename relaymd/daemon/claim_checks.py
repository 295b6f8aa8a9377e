"""The daemon's storage checks of reported checkpoints, many at once.

Each check is a few storage round trips (~0.4-1 s on B2); done one after another they add
seconds per cycle at a thousand workers. They run on a dedicated, bounded thread pool, so
they neither queue behind nor starve the event loop's default executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from relaymd.daemon.evidence import ClaimKey, advance_refusal, claim_key, claim_shape_refusal
from relaymd.logging import get_logger
from relaymd.mailbox.carrier import ClusterSnapshot
from relaymd.mailbox.models import EventKind
from relaymd.models import CheckpointRef, Job
from relaymd.storage.base import ObjectStore

if TYPE_CHECKING:
    from relaymd.state.async_store import AsyncStateStore

log = get_logger(__name__)

# Checks in flight at once (each may itself run a few requests: relaymd.storage.parallel).
VERIFY_CONCURRENCY = 16

_pool = ThreadPoolExecutor(max_workers=VERIFY_CONCURRENCY, thread_name_prefix="verify")


async def verify_claims(
    store: ObjectStore, claims: Sequence[tuple[str, CheckpointRef]]
) -> list[Exception | None]:
    """For each (job id, ref): None when the checkpoint verified, else why not; in order."""
    from relaymd.storage.checkpoints import verify_claimed_checkpoint

    loop = asyncio.get_running_loop()

    async def one(job_id: str, ref: CheckpointRef) -> Exception | None:
        try:
            await loop.run_in_executor(_pool, verify_claimed_checkpoint, store, job_id, ref)
        except Exception as exc:  # any storage or integrity failure: not verified
            return exc
        return None

    return list(await asyncio.gather(*(one(job_id, ref) for job_id, ref in claims)))


MAX_CLAIMS_PER_JOB = 16  # storage checks of reported checkpoints per job and cycle


class ClaimVerdicts(BaseModel):
    verified: set[ClaimKey] = Field(default_factory=set)
    rejected: dict[ClaimKey, str] = Field(default_factory=dict)


def _reported(snapshot: ClusterSnapshot) -> list[tuple[str, CheckpointRef]]:
    return [
        (event.job_id, event.checkpoint)
        for files in snapshot.files.values()
        for event in files.events
        if event.kind in (EventKind.CHECKPOINT, EventKind.COMPLETED)
        and event.checkpoint is not None
        and event.job_id
    ]


def _judge(
    jobs: dict[str, Job | None], reported: list[tuple[str, CheckpointRef]], verdicts: ClaimVerdicts
) -> dict[str, dict[ClaimKey, CheckpointRef]]:
    """Refuse what cannot advance the pointer anyway; the rest are candidates, by job."""
    candidates: dict[str, dict[ClaimKey, CheckpointRef]] = {}
    for job_id, ref in reported:
        job = jobs[job_id]
        if job is None:
            continue
        if job.prewritten_epoch and ref.epoch == job.prewritten_epoch:
            # A pre-written successor's first checkpoints may arrive in the cycle that
            # commits its epoch (ADR 0009): judge them as of that epoch; decide fences by
            # the epoch it commits.
            job = job.model_copy(update={"epoch": job.prewritten_epoch})
        key = claim_key(job.id, ref)
        reason = claim_shape_refusal(job, ref) or advance_refusal(job, ref)
        if reason is not None:
            verdicts.rejected[key] = reason
        else:
            candidates.setdefault(job.id, {})[key] = ref
    return candidates


async def verify_reported(
    state: AsyncStateStore, store: ObjectStore, snapshot: ClusterSnapshot
) -> ClaimVerdicts:
    """Reported checkpoints checked against storage (outside the store lock): the job's
    own folder of its current epoch, a manifest agreeing on job, epoch, seq and step.
    Claims that cannot advance the pointer anyway cost no storage request, and at most
    MAX_CLAIMS_PER_JOB per job and cycle are checked (newest first)."""
    reported = _reported(snapshot)
    jobs = {job_id: await state.get_job(job_id) for job_id in {job_id for job_id, _ in reported}}
    verdicts = ClaimVerdicts()
    checks: list[tuple[ClaimKey, str, CheckpointRef]] = []
    for job_id, claims in _judge(jobs, reported, verdicts).items():
        newest_first = sorted(claims.items(), key=lambda kv: kv[1].seq, reverse=True)
        for n, (key, ref) in enumerate(newest_first):
            if n >= MAX_CLAIMS_PER_JOB:
                verdicts.rejected[key] = "too many checkpoint reports in one cycle"
                continue
            checks.append((key, job_id, ref))
    failures = await verify_claims(store, [(j, r) for _, j, r in checks])
    for (key, job_id, ref), exc in zip(checks, failures, strict=True):
        if exc is not None:
            log.warning(
                "checkpoint_verify_failed", job_id=job_id, prefix=ref.prefix, error=str(exc)
            )
            verdicts.rejected[key] = f"verification failed: {exc}"[:500]
            continue
        verdicts.verified.add(key)
    return verdicts
