"""Operator-side status rows kept in the state store: clusters, the daemon, the audit log.

`StatusSummary` is what `relaymd status` prints; the store builds it with aggregate SQL only.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from relaymd.models.allocation import AllocationState
from relaymd.models.backoff import PartitionBackoff
from relaymd.models.base import WireModel, utcnow
from relaymd.models.job import JobState


class ClusterReachability(StrEnum):
    UNKNOWN = "unknown"
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"
    NEEDS_AUTH = "needs-auth"
    # known_hosts holds another key for the login node: a person must check it (ssh-keygen -R).
    HOST_KEY_CHANGED = "host-key-changed"
    DISABLED = "disabled"


class ClusterStatus(WireModel):
    """The daemon's latest view of one cluster; `enabled` is the operator's switch."""

    name: str
    enabled: bool = True
    reachability: ClusterReachability = ClusterReachability.UNKNOWN
    last_poll_at: datetime | None = None
    last_ok_at: datetime | None = None
    last_error: str | None = None
    poll_interval_s: float | None = None
    pending: int = Field(0, ge=0)
    running: int = Field(0, ge=0)
    # Partitions whose workers died at start, by partition name (persisted across restarts).
    backoff: dict[str, PartitionBackoff] = Field(default_factory=dict)


class DaemonStatus(WireModel):
    """The single daemon's heartbeat in the store, so the CLI can tell whether it runs."""

    pid: int
    hostname: str
    started_at: datetime = Field(default_factory=utcnow)
    last_cycle_at: datetime | None = None
    cycles: int = Field(0, ge=0)
    version: str


class AuditEvent(WireModel):
    """One line of the audit log; `id` is assigned by the store."""

    id: int | None = None
    at: datetime = Field(default_factory=utcnow)
    kind: str
    job_id: str | None = None
    allocation_id: str | None = None
    cluster: str | None = None
    message: str


class AllocationCount(WireModel):
    cluster: str
    state: AllocationState
    count: int = Field(ge=0)


class StatusSummary(WireModel):
    """Everything `relaymd status` shows, read in one consistent snapshot."""

    jobs: dict[JobState, int] = Field(default_factory=dict)
    total_jobs: int = 0
    running_jobs: int = 0
    # Sum of the running jobs' last reported ns/day (jobs without a rate count as 0).
    running_ns_per_day: float = 0.0
    allocations: list[AllocationCount] = Field(default_factory=list)
    clusters: list[ClusterStatus] = Field(default_factory=list)
    daemon: DaemonStatus | None = None
    generated_at: datetime = Field(default_factory=utcnow)

    def allocations_on(self, cluster: str) -> dict[AllocationState, int]:
        return {a.state: a.count for a in self.allocations if a.cluster == cluster}
