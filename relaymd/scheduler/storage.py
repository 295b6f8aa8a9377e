"""The `storage` cluster kind's scheduler (ADR 0022): there is none. Workers are started by a
person (`relaymd-worker --mailbox s3://...`) and join through the job bucket, so nothing is
submitted; the scheduler's view of each allocation comes from the bucket itself
(relaymd.mailbox.storage_cluster). A cancel is the only thing this side says: it names the
allocations, and the carrier asks those workers to stop (control.json)."""

from __future__ import annotations

from collections.abc import Sequence

from relaymd.models import Allocation, ClusterProfile
from relaymd.scheduler.base import SchedulerJob, SubmitResult

CANCEL_PREFIX = "stop-workers"


class StorageScheduler:
    """Fits relaymd.scheduler.port.SchedulerPort; the cluster runs in watch mode."""

    def render_job_script(
        self, alloc: Allocation, profile: ClusterProfile, worker_args: Sequence[str]
    ) -> str:
        return ""  # never submitted: a storage cluster only watches (ClusterMode.WATCH)

    def submit_snippet(self, alloc: Allocation, script_path: str) -> str:
        return ""

    def parse_submit(self, text: str) -> list[SubmitResult]:
        return []

    def query_snippet(self, profile: ClusterProfile, ended_ids: Sequence[str]) -> str:
        return ""  # the carrier's LIST is the query

    def parse_query(self, text: str) -> list[SchedulerJob]:
        return []

    def cancel_snippet(self, scheduler_ids: Sequence[str]) -> str:
        # A storage allocation's scheduler id is its allocation id (see storage_cluster).
        return " ".join([CANCEL_PREFIX, *scheduler_ids])


def cancelled_ids(snippet: str | None) -> list[str]:
    """The allocation ids a cancel_snippet named."""
    parts = (snippet or "").split()
    return parts[1:] if parts[:1] == [CANCEL_PREFIX] else []
