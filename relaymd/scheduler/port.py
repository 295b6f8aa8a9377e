"""What the daemon asks of a scheduler, as a Protocol: `Scheduler` fits it, and so does any
stand-in with the same methods (a test's file-queue scheduler, a benchmark's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from relaymd.models import Allocation, ClusterProfile
    from relaymd.scheduler.base import SchedulerJob, SubmitResult


class SchedulerPort(Protocol):
    def render_job_script(
        self, alloc: Allocation, profile: ClusterProfile, worker_args: Sequence[str]
    ) -> str: ...

    def submit_snippet(self, alloc: Allocation, script_path: str) -> str: ...

    def parse_submit(self, text: str) -> list[SubmitResult]: ...

    def query_snippet(self, profile: ClusterProfile, ended_ids: Sequence[str]) -> str: ...

    def parse_query(self, text: str) -> list[SchedulerJob]: ...

    def cancel_snippet(self, scheduler_ids: Sequence[str]) -> str: ...
