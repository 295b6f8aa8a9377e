"""The daemon on the two-cluster SLURM testbed (real sshd, real SLURM, moto S3).

One daemon run carries every scenario, to keep the testbed time affordable:
6 jobs on 1-minute allocations relay across both clusters; meanwhile a worker is killed with
SIGKILL, an allocation is scancel'ed, the daemon is killed with SIGKILL and restarted, and one
cluster's sshd is stopped for two minutes. One job has a malicious title.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from relaymd.mailbox.models import Heartbeat
from relaymd.models import JobState
from relaymd.models.state import ClusterReachability
from tests.daemon.daemon_e2e_support import (
    kill9,
    start_daemon,
    stop_daemon,
    wait_for,
    write_spec,
    write_tiny_system,
)
from tests.testbed.testbed import (
    Testbed,
    relay_config,
    require_testbed,
    slurm,
    sshd_listener,
    sshd_sessions,
    storage_env,
    worker_code_copy,
)

pytestmark = [pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(1500)]

EVIL_TITLE = "$(touch /tmp/relaymd-pwned-title) `touch /tmp/relaymd-pwned-tick`; rm -rf ~ #"


def _start(root: Path, config: Path, tb: Testbed) -> subprocess.Popen[bytes]:
    return start_daemon(root, config, extra_env=storage_env(tb))


def test_testbed_relay_with_failures(tmp_path: Path) -> None:
    tb = require_testbed()
    from relaymd.config import load_config
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.state import StateStore
    from relaymd.storage import open_store
    from relaymd.submission.submit import submit_directory

    for stale in Path("/tmp").glob("relaymd-pwned-*"):
        stale.unlink()
    run = f"t{secrets.token_hex(4)}"
    config_path = tmp_path / "config.yaml"
    code = worker_code_copy()
    config_path.write_text(yaml.safe_dump(relay_config(tmp_path, tb, run, code)))
    os.environ["RELAYMD_S3_ACCESS_KEY_ID"] = tb.s3_access_key_id
    os.environ["RELAYMD_S3_SECRET_ACCESS_KEY"] = tb.s3_secret_access_key
    loaded = load_config(config_path)
    store = open_store(storage_access(loaded.config, make_secrets_provider(loaded.config.secrets)))
    state = StateStore.open(Path(loaded.config.state_path))
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")

    inputs = tmp_path / "inputs"
    rate = write_tiny_system(inputs)
    # ~45 s of compute on an idle core: two or more 1-minute segments under contention.
    steps = max(500, int(rate * 45) // 100 * 100)
    jobs = []
    for i in range(6):
        job_dir = tmp_path / f"job{i}"
        shutil.copytree(inputs, job_dir)
        write_spec(job_dir, EVIL_TITLE if i == 0 else f"testbed job {i}", steps, checkpoint_s=5)
        jobs.append(submit_directory(job_dir, loaded=loaded, store=store, state=state))

    daemon = _start(tmp_path, config_path, tb)
    listener_cmd: list[str] | None = None
    try:
        # 1. A worker killed with SIGKILL: its job is requeued and resumes.
        victim = wait_for(
            "a checkpointed running job",
            lambda: next(
                (
                    j
                    for j in state.list_jobs(states=[JobState.RUNNING])
                    if j.checkpoint and j.checkpoint.step > 0
                ),
                None,
            ),
            300,
            tmp_path,
        )
        alloc = state.get_allocation(victim.allocation_id or "")
        assert alloc is not None
        folder = Path(tb.cluster(alloc.cluster).scratch) / run / "alloc" / alloc.id
        beat = Heartbeat.model_validate_json((folder / "heartbeat.json").read_text())
        os.kill(beat.pid, signal.SIGKILL)

        # 2. Another running allocation scancel'ed behind the daemon's back.
        target = wait_for(
            "a second running job",
            lambda: next(
                (
                    j
                    for j in state.list_jobs(states=[JobState.RUNNING])
                    if j.id != victim.id and j.allocation_id
                ),
                None,
            ),
            120,
            tmp_path,
        )
        cancelled = state.get_allocation(target.allocation_id or "")
        assert cancelled is not None and cancelled.scheduler_id
        slurm(tb, cancelled.cluster, "scancel", cancelled.scheduler_id)

        for job in (victim, target):
            wait_for(
                f"{job.id} requeued and resumed",
                lambda job=job: (
                    (j := state.get_job(job.id))
                    and j.epoch > job.epoch
                    and j.state in (JobState.RUNNING, JobState.COMPLETED)
                ),
                240,
                tmp_path,
            )

        # 3. The daemon killed with SIGKILL mid-run, restarted.
        kill9(daemon)
        daemon = _start(tmp_path, config_path, tb)

        # 4. clustera's sshd down for two minutes: clusterb carries on.
        listener, listener_cmd = sshd_listener("clustera")
        sessions = sshd_sessions(listener)
        os.kill(listener, signal.SIGTERM)
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        outage_started = time.monotonic()
        wait_for(
            "clustera seen unreachable",
            lambda: (
                (s := state.get_cluster_status("clustera"))
                and s.reachability is ClusterReachability.UNREACHABLE
            ),
            90,
            tmp_path,
        )
        time.sleep(max(0.0, 120 - (time.monotonic() - outage_started)))
        progressed_b = [
            s
            for j in state.list_jobs()
            for s in state.list_segments(j.id)
            if s.cluster == "clusterb" and s.started_at.timestamp() > time.time() - 125
        ]
        assert progressed_b, "clusterb did not carry on while clustera was down"
        subprocess.run(listener_cmd, check=True)
        listener_cmd = None
        wait_for(
            "clustera reachable again",
            lambda: (
                (s := state.get_cluster_status("clustera"))
                and s.reachability is ClusterReachability.REACHABLE
            ),
            120,
            tmp_path,
        )

        # 5. Everything completes.
        wait_for(
            "all jobs final",
            lambda: all((state.get_job(j.id) or j).state.is_final for j in jobs),
            900,
            tmp_path,
        )
    finally:
        if listener_cmd is not None:
            with contextlib.suppress(OSError):
                subprocess.run(listener_cmd, check=False)
        stop_daemon(daemon)

    finals = [state.get_job(j.id) for j in jobs]
    assert all(j is not None and j.state is JobState.COMPLETED for j in finals), [
        (j.id, j.state, j.failure_reason) for j in finals if j
    ]
    clusters_used = set()
    for job in jobs:
        segments = state.list_segments(job.id)
        assert len(segments) >= 2, (job.id, segments)
        clusters_used |= {s.cluster for s in segments}
    assert clusters_used == {"clustera", "clusterb"}
    # The killed worker's and the scancel'ed allocation's jobs resumed on another allocation
    # from their last checkpoint (the victim's was past step 0), not from the start.
    for hit in (victim, target):
        history = state.list_segments(hit.id)
        lost = next(s for s in history if s.epoch == hit.epoch)
        after = next(s for s in history if s.epoch > hit.epoch)
        assert after.allocation_id != lost.allocation_id, (hit.id, history)
        if hit.checkpoint is not None:
            assert after.start_step >= hit.checkpoint.step, (hit.id, history)
    assert victim.checkpoint is not None and victim.checkpoint.step > 0

    # No duplicate sbatch: every relaymd job name appears once in each cluster's accounting.
    for c in tb.clusters:
        rows = {a.id for a in state.list_allocations(cluster=c.name) if a.scheduler_id}
        # slurmctld hands records to slurmdbd asynchronously: a job submitted just before the
        # daemon stopped can be missing from sacct for a few seconds.
        deadline = time.monotonic() + 60
        while True:
            names = slurm(
                tb, c.name, "sacct", "-a", "-X", "-n", "-P", "-o", "JobName", "-S", started_at
            ).split()
            ours = [n for n in names if n.startswith("relaymd-")]
            if {n.removeprefix("relaymd-") for n in ours} >= rows or time.monotonic() > deadline:
                break
            time.sleep(1)
        dupes = [n for n, k in Counter(ours).items() if k > 1]
        assert not dupes, f"{c.name}: submitted twice: {dupes}"
        assert {n.removeprefix("relaymd-") for n in ours} >= rows

    # No injection through the title (it travels only as base64 JSON).
    assert not list(Path("/tmp").glob("relaymd-pwned-*"))
    state.close()
    shutil.rmtree(code, ignore_errors=True)
