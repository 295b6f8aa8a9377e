"""What the daemon puts into a job script beyond the profile: the worker's command line; and
the check that a profile renders a safe job script at all (once, when a runner starts)."""

from __future__ import annotations

from relaymd.ids import slot_allocation_id
from relaymd.logging import get_logger
from relaymd.mailbox.layout import alloc_dir
from relaymd.models import Allocation, ClusterProfile, WorkerSettings
from relaymd.scheduler.port import SchedulerPort

log = get_logger(__name__)

JOB_SCRIPT = "job.sh"  # its name in the allocation's folder
PROBE_ALLOCATION_ID = "a0000000000000000"


def worker_args(scratch: str, allocation_id: str, worker: WorkerSettings) -> list[str]:
    """The worker's arguments (JobScriptContext.worker_args) for one allocation."""
    return [
        "--alloc-dir",
        alloc_dir(scratch, allocation_id),
        "--heartbeat-interval",
        f"{worker.heartbeat_interval_s:g}",
        "--idle-timeout",
        f"{worker.idle_timeout_s:g}",
        "--margin-min",
        f"{worker.handoff_margin_min_s:g}",
        "--margin-max",
        f"{worker.handoff_margin_max_s:g}",
    ]


def probe_allocations(profile: ClusterProfile) -> list[Allocation]:
    """One allocation per partition and image: every job script the profile can produce (for
    a multi-GPU partition, its GPU group's, which lists every slot's folder: ADR 0026)."""
    probes: list[Allocation] = []
    for partition in profile.partitions:
        slots = partition.gpus_per_allocation
        group = {"group_id": PROBE_ALLOCATION_ID, "slot_count": slots} if slots > 1 else {}
        probes.extend(
            Allocation(
                id=slot_allocation_id(PROBE_ALLOCATION_ID, 0) if group else PROBE_ALLOCATION_ID,
                cluster=profile.name,
                partition=partition.name,
                image=image,
                walltime_s=partition.walltime_s,
                **group,
            )
            for image in sorted(profile.images) or ["openmm"]
        )
    return probes


def profile_problem(
    scheduler: SchedulerPort, profile: ClusterProfile, worker: WorkerSettings
) -> str | None:
    """Why a profile value cannot go into a job script or submit command safely, or None.
    The daemon then watches the cluster but submits nothing, with this in its status."""
    for probe in probe_allocations(profile):
        try:
            scheduler.render_job_script(
                probe, profile, worker_args(profile.scratch, probe.id, worker)
            )
            scheduler.submit_snippet(probe, f"{profile.scratch}/x/{JOB_SCRIPT}")
        except ValueError as exc:
            log.error("cluster_profile_unsafe", cluster=profile.name, error=str(exc))
            return f"cluster {profile.name}: {exc}"
    return None
