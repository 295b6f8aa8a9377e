"""One audit row in the store and the matching log line: how the cycle's steps record what
they did to a job or an allocation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaymd.logging import get_logger

if TYPE_CHECKING:
    from relaymd.state.async_store import AsyncStateStore

log = get_logger(__name__)


async def record_event(
    store: AsyncStateStore,
    cluster: str,
    kind: str,
    message: str,
    *,
    allocation_id: str | None,
    job_id: str | None = None,
    warn: bool = False,
    **log_fields: object,
) -> None:
    await store.add_event(
        kind, message, job_id=job_id, allocation_id=allocation_id, cluster=cluster
    )
    if job_id is not None:
        log_fields["job_id"] = job_id
    (log.warning if warn else log.info)(
        kind, cluster=cluster, allocation_id=allocation_id, **log_fields
    )
