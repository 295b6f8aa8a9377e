"""The testbed's GPUs (ADR 0026): SLURM binds disjoint CUDA_VISIBLE_DEVICES to concurrent
`gpu4` jobs, sacct records them, the nvidia-smi stand-in reports the node's GPUs; and a job
script rendered for a 4-slot allocation runs `relaymd-worker slots` in a real SLURM job."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from relaymd.mailbox.files import atomic_write_bytes, read_events, read_model
from relaymd.mailbox.layout import CREDENTIALS_FILE, EVENTS_FILE, HEARTBEAT_FILE
from relaymd.mailbox.models import EventKind, Heartbeat
from relaymd.models import Allocation, ClusterProfile, StorageAccess
from relaymd.scheduler import SlurmScheduler
from relaymd.scheduler.templates import render
from tests.support.waiting import poll_until
from tests.testbed.testbed import (
    Testbed,
    TestbedCluster,
    create_bucket,
    require_testbed,
    slurm,
    worker_code_copy,
)

pytestmark = pytest.mark.testbed

JOB_TIMEOUT_S = 120.0


@pytest.fixture
def testbed() -> Testbed:
    tb = require_testbed()
    if any(c.gpus < 4 or c.nvidia_smi_dir is None for c in tb.clusters):
        pytest.fail("testbed.json lists no GPUs: re-run tests/testbed/up.sh", pytrace=False)
    return tb


def ssh(cluster: TestbedCluster, command: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [
            "ssh", "-i", str(cluster.client_key), "-p", str(cluster.ssh_port),
            "-o", f"UserKnownHostsFile={cluster.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", f"{cluster.username}@{cluster.ssh_host}", command,
        ],
        input=stdin, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


def sacct_row(tb: Testbed, cluster: str, job_id: str) -> dict[str, str] | None:
    fields = ["State", "AllocTRES", "Partition"]
    out = slurm(tb, cluster, "sacct", "-X", "-n", "-P", "-j", job_id, "-o", ",".join(fields))
    lines = [line for line in out.splitlines() if line.strip()]
    return dict(zip(fields, lines[0].split("|"), strict=True)) if lines else None


def ended(tb: Testbed, cluster: str, job_id: str) -> dict[str, str] | None:
    row = sacct_row(tb, cluster, job_id)
    return row if row is not None and row["State"] not in ("PENDING", "RUNNING") else None


def shared_folder(cluster: TestbedCluster, name: str) -> Path:
    folder = cluster.scratch / f"{name}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    return folder


def give_to_user(folder: Path, cluster: TestbedCluster) -> None:
    shutil.chown(folder, cluster.username, cluster.username)
    for path in folder.rglob("*"):
        shutil.chown(path, cluster.username, cluster.username)


def test_gpu4_jobs_get_disjoint_devices_recorded_by_sacct(testbed: Testbed) -> None:
    for cluster in testbed.clusters:
        folder = shared_folder(cluster, "gpus")
        give_to_user(folder, cluster)
        script = f"""#!/bin/bash
#SBATCH --partition={cluster.gpu_partition}
#SBATCH --gres=gpu:2
#SBATCH --time=00:02:00
#SBATCH --output={folder}/%j.out
echo "cvd=$CUDA_VISIBLE_DEVICES"
PATH={cluster.nvidia_smi_dir}:$PATH nvidia-smi --query-gpu=index,name,memory.total \\
  --format=csv,noheader,nounits
touch {folder}/$SLURM_JOB_ID.running
for i in $(seq 600); do [ -e {folder}/release ] && break; sleep 0.1; done
"""
        ssh(cluster, f"cat > {folder}/job.sh", script)
        ids = [
            ssh(cluster, f"sbatch --parsable {folder}/job.sh").strip().split(";")[0]
            for _ in range(2)
        ]
        # Both hold their GPUs at the same time before either may end.
        both = poll_until(
            lambda f=folder, j=ids: all((f / f"{i}.running").exists() for i in j), JOB_TIMEOUT_S
        )
        assert both, f"{cluster.name}: two 2-GPU jobs did not run together"
        (folder / "release").touch()
        rows = [
            poll_until(lambda i=i, c=cluster.name: ended(testbed, c, i), JOB_TIMEOUT_S) for i in ids
        ]
        devices = []
        for job_id, row in zip(ids, rows, strict=True):
            assert isinstance(row, dict) and row["State"] == "COMPLETED", row
            assert "gres/gpu=2" in row["AllocTRES"], row
            out = (folder / f"{job_id}.out").read_text().splitlines()
            devices.append(set(out[0].removeprefix("cvd=").split(",")))
            # Like the real one, nvidia-smi lists every GPU of the node, whatever is bound.
            smi = [f"{g}, {cluster.gpu_name}, {cluster.gpu_memory_mib}" for g in range(4)]
            assert out[1:5] == smi
        assert all(len(d) == 2 for d in devices) and not devices[0] & devices[1]
        assert devices[0] | devices[1] == {"0", "1", "2", "3"}


def slots_profile(tb: Testbed, cluster: TestbedCluster, code: Path) -> ClusterProfile:
    return ClusterProfile.model_validate(
        {
            "name": cluster.name,
            "ssh": {"host": cluster.ssh_host, "port": cluster.ssh_port},
            "scratch": str(cluster.scratch),
            "partitions": [
                {"name": cluster.gpu_partition, "walltime_minutes": 2, "gpus_per_allocation": 4}
            ],
            "native_worker": [
                "env", f"PATH={cluster.nvidia_smi_dir}:/usr/bin:/bin", f"PYTHONPATH={code}",
                str(tb.worker_python), "-m", "worker_entry",
            ],
        }
    )  # fmt: skip


def test_slots_job_script_runs_one_worker_per_gpu_in_a_real_slurm_job(testbed: Testbed) -> None:
    cluster = testbed.clusters[0]
    code = worker_code_copy()
    bucket = f"relaymd-slots-{secrets.token_hex(4)}"
    create_bucket(testbed, bucket)
    access = StorageAccess(
        url=f"s3://{bucket}/relay",
        endpoint_url=testbed.s3_endpoint_url,
        region=testbed.s3_region,
        access_key_id=testbed.s3_access_key_id,
        secret_access_key=testbed.s3_secret_access_key,
    )
    root = shared_folder(cluster, "slots")
    group = f"g{secrets.token_hex(6)}"
    slots = [root / "alloc" / f"{group}-g{i}" for i in range(4)]
    for folder in slots:
        folder.mkdir(parents=True)
        atomic_write_bytes(folder / CREDENTIALS_FILE, access.credentials_json().encode(), 0o600)
    give_to_user(root, cluster)
    profile = slots_profile(testbed, cluster, code)
    alloc = Allocation(
        id=group, cluster=cluster.name, partition=str(cluster.gpu_partition),
        image="openmm", walltime_s=120,
    )  # fmt: skip
    args = ["--alloc-dir", str(slots[0]), "--idle-timeout", "3", "--heartbeat-interval", "1"]
    job = SlurmScheduler(profile).script_context(alloc, profile, args)
    job = job.model_copy(update={"slot_dirs": [str(s) for s in slots], "output": f"{root}/out"})
    script = render("slurm.sbatch.j2", job=job)
    job_id = ssh(cluster, f"cat > {root}/job.sh && sbatch --parsable {root}/job.sh", script)
    job_id = job_id.strip().split(";")[0]
    row = poll_until(lambda: ended(testbed, cluster.name, job_id), JOB_TIMEOUT_S)
    out = (root / "out").read_text() if (root / "out").exists() else ""
    assert isinstance(row, dict) and row["State"] == "COMPLETED", (row, out)
    assert "gres/gpu=4" in row["AllocTRES"]
    for folder in slots:
        events = read_events(folder / EVENTS_FILE, 0)[0]
        assert [e.kind for e in events] == [EventKind.IDLE_EXIT, EventKind.SLOT_EXITED], out
        assert events[1].exit_code == 0
        heartbeat = read_model(folder / HEARTBEAT_FILE, Heartbeat)
        # nvidia-smi lists the node's 4 GPUs; each slot's worker reports only its own.
        assert heartbeat is not None and [g.name for g in heartbeat.gpus] == [cluster.gpu_name]
        assert not (folder / CREDENTIALS_FILE).exists()
