"""Per-partition backoff after workers that die at start (kept with the cluster's status)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from relaymd.models.base import WireModel


class PartitionBackoff(WireModel):
    """Consecutive allocations of one partition whose worker never reported.

    `until` set: no new allocation is submitted to the partition before then. A worker that
    reports (a heartbeat or an event) clears the record.
    """

    partition: str
    failures: int = Field(0, ge=0)
    until: datetime | None = None
    reason: str = ""
    last_allocation_id: str | None = None

    def active(self, now: datetime) -> bool:
        return self.until is not None and now < self.until

    def describe(self, cluster: str, now: datetime) -> str:
        """One line for `status`, `clusters list` and `jobs show`."""
        wait = ""
        if self.until is not None:
            left = max(0, round((self.until - now).total_seconds()))
            wait = f"; next try in {left} s" if left else "; next try now"
        return (
            f"{cluster}/{self.partition}: {self.failures} allocation(s) in a row ended without "
            f"the worker reporting ({self.reason}){wait}"
        )
