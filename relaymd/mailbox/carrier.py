"""The seam between the daemon and a way of reaching the workers' mailboxes (ADR 0018).

A carrier moves the same protocol (relaymd.mailbox.models, relaymd.mailbox.layout) between the
daemon and the workers of one cluster: it reads every allocation's mailbox in one batch and
writes assignments, controls and credentials in at most one more. The first carrier is shared
scratch reached over SSH (relaymd.mailbox.scratch); a second one (object storage) implements
the same two methods and reuses relaymd.mailbox.reading for everything it brings back.
Whatever a carrier returns is still a worker's claim: the daemon checks it (invariant 8).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import BaseModel, Field

from relaymd.mailbox.models import Heartbeat, WorkerEvent


class ReadRequest(BaseModel):
    allocation_id: str
    events_offset: int = 0
    want_log: bool = False
    skipping: bool = False  # the offset is inside an oversized line: find its end first


class AllocationFiles(BaseModel):
    """What one allocation's mailbox said this cycle. Missing/garbled files are None/empty."""

    allocation_id: str
    heartbeat: Heartbeat | None = None
    events: list[WorkerEvent] = Field(default_factory=list)
    events_offset: int = 0  # offset after the complete lines consumed
    events_skipping: bool = False  # the new offset is inside an oversized line
    oversized_lines: int = 0  # lines over EVENT_LINE_MAX_BYTES skipped this cycle
    unusable_lines: int = 0  # complete lines that are not an event of this allocation
    heartbeat_oversized: bool = False
    log_tail: list[str] | None = None


class MailboxRead(BaseModel):
    """Every requested allocation's files, keyed by allocation id."""

    files: dict[str, AllocationFiles] = Field(default_factory=dict)


class ClusterSnapshot(MailboxRead):
    """One cluster's read step: its mailboxes and the scheduler's view of its allocations
    (read in the same round trip where the carrier shares the scheduler's channel)."""

    cluster: str
    query_ok: bool
    query_error: str = ""
    # allocation id -> the scheduler's view (relaymd.scheduler.SchedulerJob)
    scheduler_jobs: dict[str, Any] = Field(default_factory=dict)


class FileWrite(BaseModel):
    allocation_id: str
    name: str  # a file name inside the allocation's mailbox
    data: bytes
    mode: int = 0o600


class FileRemoval(BaseModel):
    allocation_id: str
    name: str  # e.g. the credentials of an ended allocation, a withdrawn assignment.json


class MailboxWrites(BaseModel):
    """What one cycle writes into mailboxes; each file is replaced atomically."""

    mkdirs: list[str] = Field(default_factory=list)  # allocation ids whose mailbox is new
    files: list[FileWrite] = Field(default_factory=list)
    removals: list[FileRemoval] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.mkdirs or self.files or self.removals)


class MailboxWritten(BaseModel):
    complete: bool  # the whole batch was attempted (a failed item is listed below)
    failed_files: list[tuple[str, str]] = Field(default_factory=list)  # (allocation, name)
    failed_dirs: list[str] = Field(default_factory=list)


class MailboxCarrier(Protocol):
    """One way of reaching the mailboxes of a cluster's allocations."""

    async def read(
        self, requests: Sequence[ReadRequest], *, sweep_keep: Sequence[str] | None = None
    ) -> MailboxRead:
        """Every requested mailbox in one batch. With `sweep_keep`, also remove the stale
        credentials of any mailbox not in it (once after a daemon start)."""
        ...

    async def write(self, writes: MailboxWrites) -> MailboxWritten:
        """Create mailboxes, then write and remove files, in one batch."""
        ...
