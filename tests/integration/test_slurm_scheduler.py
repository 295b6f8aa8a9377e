"""SlurmScheduler through SSHTransport on the testbed's real SLURM: submit, query, cancel."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator

import pytest

from relaymd.ids import new_allocation_id
from relaymd.mailbox.layout import alloc_dir
from relaymd.models import Allocation, ClusterProfile
from relaymd.scheduler import EndState, SchedulerJob, SchedulerPhase, SlurmScheduler
from relaymd.transport.ssh import SSHTransport
from tests.testbed.testbed import TestbedCluster, require_testbed

pytestmark = [pytest.mark.testbed]

POLL_S = 1.0
# Bounds, not timings: a wedged cluster fails the test instead of hanging CI.
END_BOUND_S = 90.0


@pytest.fixture
def cluster() -> TestbedCluster:
    return require_testbed().cluster("clustera")


def profile_for(cluster: TestbedCluster, native: list[str]) -> ClusterProfile:
    return ClusterProfile.model_validate(
        {
            "name": cluster.name,
            "ssh": {
                "host": cluster.ssh_host,
                "port": cluster.ssh_port,
                "username": cluster.username,
                "identity_file": str(cluster.client_key),
                "known_hosts": str(cluster.known_hosts),
            },
            "scratch": str(cluster.scratch),
            "partitions": [
                {"name": cluster.partition, "walltime_minutes": 5, "gpus_per_allocation": 0}
            ],
            "native_worker": native,
            "command_timeout_s": 30,
        }
    )


@pytest.fixture
async def transport(cluster: TestbedCluster) -> AsyncIterator[SSHTransport]:
    t = SSHTransport(profile_for(cluster, ["true"]), ssh_config=None)
    yield t
    await t.close()


async def submit(
    transport: SSHTransport, profile: ClusterProfile, scheduler: SlurmScheduler, walltime_s: int
) -> tuple[Allocation, str]:
    alloc = Allocation(
        id=new_allocation_id(),
        cluster=profile.name,
        partition=profile.partitions[0].name,
        image="openmm",
        walltime_s=walltime_s,
    )
    folder = alloc_dir(profile.scratch, alloc.id)
    script = scheduler.render_job_script(alloc, profile, ["--alloc-dir", folder])
    payload = base64.b64encode(script.encode()).decode()
    # What the daemon's batched write does, in one round trip: folder, job.sh, submit.
    result = await transport.run(
        f"mkdir -p -m 700 {folder} && printf %s {payload} | base64 -d > {folder}/job.sh\n"
        + scheduler.submit_snippet(alloc, f"{folder}/job.sh")
    )
    [sub] = scheduler.parse_submit(result.stdout)
    assert sub.allocation_id == alloc.id and sub.error is None, result
    assert sub.scheduler_id is not None
    return alloc, sub.scheduler_id


async def poll_until_ended(
    transport: SSHTransport, scheduler: SlurmScheduler, alloc: Allocation, sid: str
) -> tuple[SchedulerJob, list[SchedulerPhase | None]]:
    """Poll until SLURM says the job ended; one entry per poll, None where neither squeue nor
    sacct listed it (slurmdbd can record the end a moment after squeue drops the job)."""
    phases: list[SchedulerPhase | None] = []
    deadline = time.monotonic() + END_BOUND_S
    while time.monotonic() < deadline:
        result = await transport.run(scheduler.query_snippet(scheduler.profile, [sid]))
        assert result.exit_status == 0, result
        jobs = {j.allocation_id: j for j in scheduler.parse_query(result.stdout)}
        job = jobs.get(alloc.id)
        phases.append(None if job is None else job.phase)
        if job is not None:
            assert job.scheduler_id == sid
            if job.phase is SchedulerPhase.ENDED:
                return job, phases
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"job {sid} did not end within {END_BOUND_S} s; saw {phases}")


async def test_submit_run_complete(cluster: TestbedCluster, transport: SSHTransport) -> None:
    # The "worker": prints its args and the SLURM job name, sleeps a little, exits 0.
    native = ["bash", "-c", 'echo "worker $SLURM_JOB_NAME $*"; sleep 4', "worker"]
    profile = profile_for(cluster, native)
    scheduler = SlurmScheduler(profile)
    alloc, sid = await submit(transport, profile, scheduler, walltime_s=300)
    trips = transport.round_trips
    job, phases = await poll_until_ended(transport, scheduler, alloc, sid)
    # squeue and sacct together cost one round trip per poll (invariant 6).
    assert transport.round_trips - trips == len(phases)
    assert phases[0] in (SchedulerPhase.PENDING, SchedulerPhase.RUNNING)
    assert job.end_state is EndState.COMPLETED, job
    assert job.exit_code == "0:0"
    assert job.node == cluster.node
    folder = alloc_dir(profile.scratch, alloc.id)
    out = await transport.run(f"cat {folder}/slurm-{sid}.out; stat -c %a {folder}")
    assert f"worker relaymd-{alloc.id} --alloc-dir {folder}" in out.stdout
    assert out.stdout.split()[-1] == "700"


async def test_the_batch_shell_exports_slurms_end_time_as_the_deadline(
    cluster: TestbedCluster, transport: SSHTransport
) -> None:
    """The worker in an image has no squeue: the job script finds the allocation's end (this
    SLURM sets no $SLURM_JOB_END_TIME) and exports RELAYMD_DEADLINE. The worker here only
    prints it; the verdict is SLURM's own accounting: start + time limit."""
    native = ["bash", "-c", 'echo "deadline=${RELAYMD_DEADLINE-unset}"', "worker"]
    profile = profile_for(cluster, native)
    scheduler = SlurmScheduler(profile)
    alloc, sid = await submit(transport, profile, scheduler, walltime_s=300)
    job, _ = await poll_until_ended(transport, scheduler, alloc, sid)
    assert job.end_state is EndState.COMPLETED, job
    folder = alloc_dir(profile.scratch, alloc.id)
    out = await transport.run(
        f"cat {folder}/slurm-{sid}.out; "
        f'date -d "$(sacct -n -X -P -j {sid} -o Start | head -n 1)" +%s'
    )
    printed, started = out.stdout.split()[-2:]
    assert printed == f"deadline={int(started) + 300}", out.stdout


async def test_scancel_ends_cancelled(cluster: TestbedCluster, transport: SSHTransport) -> None:
    # The worker takes the daemon's arguments and outlives the test (a bare `sleep 300` would
    # reject `--alloc-dir` and exit 1 at once: FAILED, and a race with the cancel).
    native = ["bash", "-c", 'echo "worker started"; exec sleep 300', "worker"]
    profile = profile_for(cluster, native)
    scheduler = SlurmScheduler(profile)
    alloc, sid = await submit(transport, profile, scheduler, walltime_s=600)
    folder = alloc_dir(profile.scratch, alloc.id)
    # Cancelled while it runs: squeue lists it RUNNING and the worker has printed (sacct is not
    # asked for a job we believe is running).
    deadline = time.monotonic() + END_BOUND_S
    while True:
        listed = scheduler.parse_query(
            (await transport.run(scheduler.query_snippet(profile, []))).stdout
        )
        running = any(
            j.allocation_id == alloc.id and j.phase is SchedulerPhase.RUNNING for j in listed
        )
        out = (await transport.run(f"cat {folder}/slurm-{sid}.out 2>/dev/null || true")).stdout
        if running and "worker started" in out:
            break
        assert time.monotonic() < deadline, f"job {sid} never ran: {listed} {out!r}"
        await asyncio.sleep(POLL_S)
    cancel = await transport.run(scheduler.cancel_snippet([sid]))
    assert cancel.exit_status == 0, cancel
    job, _ = await poll_until_ended(transport, scheduler, alloc, sid)
    assert job.end_state is EndState.CANCELLED, job
    assert job.raw_state.startswith("CANCELLED")
    # SLURM's own accounting agrees (the verdict is not our parser's alone).
    acct = await transport.run(f"sacct -n -X -P -j {sid} -o State | head -n 1")
    assert acct.stdout.strip().startswith("CANCELLED"), acct.stdout


async def test_query_is_one_round_trip_for_many_ids(
    cluster: TestbedCluster, transport: SSHTransport
) -> None:
    scheduler = SlurmScheduler(profile_for(cluster, ["true"]))
    before = transport.round_trips
    result = await transport.run(
        scheduler.query_snippet(scheduler.profile, [str(i) for i in range(1, 200)])
    )
    assert result.exit_status == 0, result
    assert transport.round_trips - before == 1
    # Ids that SLURM never had (or other users' jobs) produce no relaymd allocations.
    assert all(j.allocation_id for j in scheduler.parse_query(result.stdout))


@pytest.mark.slow
async def test_walltime_exceeded_ends_timeout(
    cluster: TestbedCluster, transport: SSHTransport
) -> None:
    # The shortest SLURM walltime is one minute; slurmctld notices within its timer period.
    profile = profile_for(cluster, ["bash", "-c", "trap '' TERM; sleep 600"])
    scheduler = SlurmScheduler(profile)
    alloc, sid = await submit(transport, profile, scheduler, walltime_s=60)
    deadline = time.monotonic() + 180
    job = None
    while time.monotonic() < deadline:
        jobs = scheduler.parse_query(
            (await transport.run(scheduler.query_snippet(profile, [sid]))).stdout
        )
        job = next((j for j in jobs if j.allocation_id == alloc.id), None)
        if job is not None and job.phase is SchedulerPhase.ENDED:
            break
        await asyncio.sleep(5)
    assert job is not None and job.end_state is EndState.TIMEOUT, job
