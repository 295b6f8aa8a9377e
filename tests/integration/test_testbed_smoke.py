"""Smoke test of the two-cluster testbed itself (tests/testbed/up.sh).

Proves what every other testbed test relies on: each sshd port reaches its own
SLURM cluster as the non-root user, jobs run on that cluster's node and show up
in sacct, and a job on one cluster is invisible from the other.
"""

from __future__ import annotations

import asyncio
import shlex
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncssh
import pytest
from botocore.config import Config

# tests/ is not a package; make tests/testbed/testbed.py importable.
from tests.testbed.testbed import Testbed, TestbedCluster, require_testbed, s3_client

pytestmark = pytest.mark.testbed

CONNECT_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 120.0
# Bound for a whole test, so a wedged daemon fails the test instead of hanging CI.
TEST_TIMEOUT_S = 240.0
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}


@pytest.fixture
def testbed() -> Testbed:
    return require_testbed()


@asynccontextmanager
async def ssh(cluster: TestbedCluster) -> AsyncIterator[asyncssh.SSHClientConnection]:
    # known_hosts is strict: a host key mismatch must fail, never be accepted.
    conn = await asyncio.wait_for(
        asyncssh.connect(
            cluster.ssh_host,
            port=cluster.ssh_port,
            username=cluster.username,
            client_keys=[str(cluster.client_key)],
            known_hosts=str(cluster.known_hosts),
            agent_path=None,
        ),
        CONNECT_TIMEOUT_S,
    )
    try:
        yield conn
    finally:
        conn.close()
        await conn.wait_closed()


async def run(conn: asyncssh.SSHClientConnection, cmd: str, stdin: str | None = None) -> str:
    result = await conn.run(cmd, input=stdin, check=True, timeout=COMMAND_TIMEOUT_S)
    return str(result.stdout)


async def submit(
    conn: asyncssh.SSHClientConnection, cluster: TestbedCluster, tb: Testbed, name: str
) -> tuple[str, str]:
    """Submit a tiny job from a fresh scratch dir; return (job id, that dir)."""
    workdir = f"{cluster.scratch}/smoke-{uuid.uuid4().hex[:12]}"
    script = f"""#!/bin/bash
#SBATCH --output={workdir}/slurm-%j.out
{{
  echo "cluster=$SLURM_CLUSTER_NAME"
  echo "node=$SLURMD_NODENAME"
  echo "user=$(id -un)"
  echo "prefix=$({shlex.quote(str(tb.worker_python))} -c 'import sys; print(sys.prefix)')"
}} > {workdir}/result.txt
"""
    await run(conn, f"mkdir -p {workdir} && cat > {workdir}/job.sh", stdin=script)
    out = await run(
        conn,
        f"sbatch --parsable -t 1 -p {cluster.partition} --job-name {shlex.quote(name)} "
        f"-D {workdir} {workdir}/job.sh",
    )
    # --parsable prints "id" or "id;cluster".
    job_id = out.strip().split(";")[0]
    assert job_id.isdigit(), f"unexpected sbatch output {out!r}"
    return job_id, workdir


async def wait_completed(conn: asyncssh.SSHClientConnection, job_id: str) -> None:
    """Poll sacct (the source of truth) until the job COMPLETED, bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + JOB_TIMEOUT_S
    state = ""
    while loop.time() < deadline:
        out = await run(conn, f"sacct -j {job_id} -X -n -P -o State")
        # sacct can lag slurmctld by a moment; an empty answer just means "not yet".
        state = out.strip().split("\n")[0].split(" ")[0] if out.strip() else ""
        if state == "COMPLETED":
            return
        assert state not in FAILED_STATES, f"job {job_id} ended {state}"
        await asyncio.sleep(1.0)
    pytest.fail(f"job {job_id} not COMPLETED within {JOB_TIMEOUT_S}s (last state {state!r})")


@pytest.mark.asyncio
@pytest.mark.parametrize("cluster_name", ["clustera", "clusterb"])
async def test_job_runs_on_its_own_cluster(testbed: Testbed, cluster_name: str) -> None:
    cluster = testbed.cluster(cluster_name)

    async def body() -> None:
        async with ssh(cluster) as conn:
            # sshd's SetEnv is what selects the cluster for the SLURM CLI.
            assert (await run(conn, "echo $SLURM_CONF")).strip() == str(cluster.slurm_conf)
            job_id, workdir = await submit(conn, cluster, testbed, "relaymd-smoke")
            try:
                await wait_completed(conn, job_id)
                result = dict(
                    line.split("=", 1)
                    for line in (await run(conn, f"cat {workdir}/result.txt")).splitlines()
                )
                assert result["cluster"] == cluster.name
                assert result["node"] == cluster.node
                assert result["user"] == cluster.username
                assert result["prefix"] == str(testbed.worker_python.parent.parent)
                nodes = await run(conn, f"sacct -j {job_id} -X -n -P -o Cluster,NodeList")
                assert nodes.strip() == f"{cluster.name}|{cluster.node}"
            finally:
                await run(conn, f"rm -rf {workdir}")

    await asyncio.wait_for(body(), TEST_TIMEOUT_S)


@pytest.mark.asyncio
async def test_clusters_do_not_see_each_others_jobs(testbed: Testbed) -> None:
    a, b = testbed.cluster("clustera"), testbed.cluster("clusterb")
    # Job ids are per cluster and may collide, so identify the job by a unique name.
    name = f"relaymd-iso-{uuid.uuid4().hex[:8]}"

    async def body() -> None:
        async with ssh(a) as conn_a, ssh(b) as conn_b:
            job_id, workdir = await submit(conn_a, a, testbed, name)
            try:
                await wait_completed(conn_a, job_id)
                # clustera still lists the ended job (MinJobAge), and sacct has it.
                seen_a = await run(conn_a, f"squeue -h -t all -n {name} -o %i")
                assert seen_a.split() == [job_id]
                by_name = f"sacct -n -X -P -S now-1hours --name {name} -o JobID"
                # A time-window sacct query may lag `sacct -j` by a second or so.
                acct_a = ""
                for _ in range(30):
                    acct_a = await run(conn_a, by_name)
                    if acct_a.strip():
                        break
                    await asyncio.sleep(0.5)
                assert acct_a.split() == [job_id]
                # clusterb knows nothing of it, in squeue or in the shared slurmdbd.
                assert (await run(conn_b, f"squeue -h -t all -n {name} -o %i")).strip() == ""
                assert (await run(conn_b, by_name)).strip() == ""
                same_id_b = await run(conn_b, f"sacct -j {job_id} -n -X -P -o JobName")
                assert name not in same_id_b
            finally:
                await run(conn_a, f"rm -rf {workdir}")

    await asyncio.wait_for(body(), TEST_TIMEOUT_S)


def test_s3_endpoint_round_trip(testbed: Testbed) -> None:
    s3 = s3_client(
        testbed, config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2})
    )
    bucket = f"relaymd-smoke-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    try:
        s3.put_object(Bucket=bucket, Key="ping", Body=b"pong")
        assert s3.get_object(Bucket=bucket, Key="ping")["Body"].read() == b"pong"
    finally:
        s3.delete_object(Bucket=bucket, Key="ping")
        s3.delete_bucket(Bucket=bucket)
