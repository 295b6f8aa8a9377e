"""Schedulers: how allocations are submitted and watched (`slurm`, or `direct` processes)."""

from __future__ import annotations

from relaymd.models import ClusterProfile
from relaymd.scheduler.base import (
    JOB_NAME_PREFIX,
    EndState,
    JobScriptContext,
    Scheduler,
    SchedulerJob,
    SchedulerPhase,
    SubmitResult,
)
from relaymd.scheduler.direct import DirectScheduler
from relaymd.scheduler.shell import UnsafeValue
from relaymd.scheduler.slurm import SlurmScheduler


def make_scheduler(profile: ClusterProfile) -> Scheduler:
    if profile.scheduler == "direct":
        return DirectScheduler(profile)
    return SlurmScheduler(profile)


__all__ = [
    "JOB_NAME_PREFIX",
    "DirectScheduler",
    "EndState",
    "JobScriptContext",
    "Scheduler",
    "SchedulerJob",
    "SchedulerPhase",
    "SlurmScheduler",
    "SubmitResult",
    "UnsafeValue",
    "make_scheduler",
]
