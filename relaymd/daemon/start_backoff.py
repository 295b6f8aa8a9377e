"""Backoff per partition when workers die at start. Pure.

An allocation whose worker ends without ever reporting (no heartbeat, no event) and that
RelayMD did not stop itself is a *start failure*: a broken worker command, a walltime the
worker refuses, a missing module. Resubmitting at every poll would flood the queue, so after
`start_failures_before_backoff` such allocations in a row the partition waits
`start_backoff_s`, doubling per further failure up to `start_backoff_max_s`. A worker that
reports clears the record. The record is part of the cluster's stored status, so a restarted
daemon keeps waiting, and `status`, `clusters list` and `jobs show` print its reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from pydantic import BaseModel

from relaymd.mailbox.carrier import AllocationFiles
from relaymd.models import Allocation, DaemonSettings
from relaymd.models.backoff import PartitionBackoff


class AllocationEnd(BaseModel):
    """An allocation that ended this cycle, with what the scheduler said about it."""

    allocation: Allocation
    state: str | None
    exit_code: int | str | None  # as the scheduler reports it (sacct: "1:0")
    worker_reported: bool


def worker_reported(alloc: Allocation, files: AllocationFiles | None) -> bool:
    """Whether the worker ever said anything: a heartbeat or event seen now or before."""
    if alloc.last_seq is not None or alloc.events_offset > 0 or alloc.end_reason is not None:
        return True
    return files is not None and (files.heartbeat is not None or bool(files.events))


def is_start_failure(end: AllocationEnd) -> bool:
    # Stopped or cancelled by the daemon (stop_requested_at) is not the worker's fault.
    return not end.worker_reported and end.allocation.stop_requested_at is None


def _reason(end: AllocationEnd) -> str:
    parts = [f"last: allocation {end.allocation.id} ended {end.state or 'vanished'}"]
    if end.exit_code is not None:
        parts.append(f"exit code {end.exit_code}")
    return ", ".join(parts)


def update_backoff(
    current: dict[str, PartitionBackoff],
    ends: Iterable[AllocationEnd],
    reported: Iterable[str],
    settings: DaemonSettings,
    now: datetime,
) -> dict[str, PartitionBackoff]:
    """The new records after this cycle's ends; `reported` are partitions whose worker
    reported this cycle (their record is cleared)."""
    out = dict(current)
    for partition in reported:
        out.pop(partition, None)
    for end in ends:
        partition = end.allocation.partition
        if not is_start_failure(end):
            if end.worker_reported:
                out.pop(partition, None)
            continue
        previous = out.get(partition) or PartitionBackoff(partition=partition)
        failures = previous.failures + 1
        until = None
        over = failures - settings.start_failures_before_backoff
        if over >= 0:
            wait = min(settings.start_backoff_max_s, settings.start_backoff_s * 2 ** min(over, 30))
            until = now + timedelta(seconds=wait)
        out[partition] = PartitionBackoff(
            partition=partition,
            failures=failures,
            until=until,
            reason=_reason(end),
            last_allocation_id=end.allocation.id,
        )
    return out


def blocked_partitions(backoff: dict[str, PartitionBackoff], now: datetime) -> set[str]:
    return {name for name, record in backoff.items() if record.active(now)}
