"""One audit row in the store and the matching log line: how the cycle's steps record what
they did to a job or an allocation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from relaymd.logging import get_logger
from relaymd.models import AuditEvent
from relaymd.state import queries as q
from relaymd.state.plan import Plan

if TYPE_CHECKING:
    from relaymd.daemon.decide.decisions import AuditRecord
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


class PreparedEvents:
    """A cycle's audit records as rows ready to insert in one statement (built before the
    write transaction), and the log lines to emit once they are stored."""

    def __init__(self, events: list[AuditEvent]) -> None:
        self.events = events
        self.plan: Plan[None] = q.add_events(events)


def prepare_events(cluster: str, audits: Sequence[AuditRecord]) -> PreparedEvents:
    return PreparedEvents(
        [
            AuditEvent(
                kind=a.kind,
                message=a.message,
                job_id=a.job_id,
                allocation_id=a.allocation_id,
                cluster=cluster,
            )
            for a in audits
        ]
    )


async def record_events(store: AsyncStateStore, prepared: PreparedEvents) -> None:
    """`record_event` for many at once: one INSERT, then each one's log line."""
    await store.run(prepared.plan)
    for event in prepared.events:
        fields: dict[str, object] = {"job_id": event.job_id} if event.job_id is not None else {}
        log.info(
            event.kind,
            cluster=event.cluster,
            allocation_id=event.allocation_id,
            detail=event.message,
            **fields,
        )
