"""The daemon's storage checks of reported checkpoints, many at once.

Each check is a few storage round trips (~0.4-1 s on B2); done one after another they add
seconds per cycle at a thousand workers. They run on a dedicated, bounded thread pool, so
they neither queue behind nor starve the event loop's default executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from relaymd.models import CheckpointRef
from relaymd.storage.base import ObjectStore

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
