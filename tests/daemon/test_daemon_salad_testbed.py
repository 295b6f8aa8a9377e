"""A job relayed from a testbed SLURM cluster to SaladCloud stand-in replicas (ADR 0025),
through checkpoints in the moto S3 bucket: HPC first (Salad's `wait_before_s` is an hour),
then the SLURM cluster is switched off while its segment runs, so when the segment hands
off only Salad fits and the daemon starts a replica, which resumes the job from the bucket.
Verdicts: sacct (the SLURM segment ran), the events and checkpoint in the bucket."""

from __future__ import annotations

import os
import secrets
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from relaymd.mailbox.files import parse_events
from relaymd.mailbox.models import EventKind, WorkerEvent
from relaymd.scheduler.base import JOB_NAME_PREFIX
from relaymd.storage.checkpoints import verify_checkpoint
from tests.daemon.daemon_e2e_support import start_daemon, wait_for, write_spec, write_tiny_system
from tests.support.salad_standin import SaladStandin
from tests.testbed.testbed import (
    relay_config,
    require_testbed,
    slurm,
    storage_env,
    worker_code_copy,
)

pytestmark = [pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(600)]
KEY = "salad-testbed-key-7e"
IMAGE = "ghcr.io/lab/relaymd-worker:testbed"


def _salad_events(store: object, kind: EventKind) -> list[tuple[str, WorkerEvent]]:
    found: list[tuple[str, WorkerEvent]] = []
    for key in store.list_keys("mailbox/"):  # type: ignore[attr-defined]
        box = key.split("/")[1]
        if not (box.startswith("salad-") and key.endswith("/events.jsonl")):
            continue
        events = parse_events(store.get_bytes(key), 0)[0]  # type: ignore[attr-defined]
        found.extend((box, e) for e in events if e.kind is kind)
    return found


def _running(state: object, job_id: str) -> bool | None:
    from relaymd.models import JobState

    job = state.get_job(job_id)  # type: ignore[attr-defined]
    return (job is not None and job.state is JobState.RUNNING) or None


def _salad_cluster(url: str) -> dict[str, object]:
    return {
        "name": "salad",
        "scheduler": "salad",
        "partitions": [{"name": "any", "walltime_minutes": 600, "gpus_per_allocation": 0}],
        "images": {"openmm": {"uri": f"docker://{IMAGE}"}},
        "poll": {"min_interval_s": 1, "max_interval_s": 2},
        "salad": {
            "organization": "lab", "project": "md", "container_group": "relay",
            "image": IMAGE, "api_url": url, "max_replicas": 1, "wait_before_s": 3600,
            "mailbox_poll_s": 1,
            "worker_args": ["--heartbeat-interval", "3", "--idle-timeout", "120",
                            "--platform", "Reference", "--margin-min", "5", "--margin-max", "12"],
        },
    }  # fmt: skip


def test_a_job_relays_from_slurm_to_salad(tmp_path: Path) -> None:
    tb = require_testbed()
    from relaymd.config import load_config
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.state import StateStore
    from relaymd.storage import open_store
    from relaymd.submission.submit import submit_directory

    root, run = tmp_path, f"s{secrets.token_hex(4)}"
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    hpc = tb.clusters[0]
    os.environ["RELAYMD_S3_ACCESS_KEY_ID"] = tb.s3_access_key_id
    os.environ["RELAYMD_S3_SECRET_ACCESS_KEY"] = tb.s3_secret_access_key
    standin = SaladStandin(
        api_key=KEY, organization="lab", project="md", images={IMAGE}, root=root,
        extra_path=str(Path(sys.executable).parent), seed=5,
    )  # fmt: skip
    with standin:
        config = relay_config(root, tb, run, worker_code_copy())
        config["clusters"] = [config["clusters"][0], _salad_cluster(standin.url)]
        config_path = root / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        loaded = load_config(config_path)
        store = open_store(
            storage_access(loaded.config, make_secrets_provider(loaded.config.secrets))
        )
        state = StateStore.open(Path(loaded.config.state_path))
        rate = write_tiny_system(root / "job")
        steps = max(1000, int(rate * 120) // 100 * 100)  # ~2 min of compute: 2+ segments
        write_spec(root / "job", "slurm then salad", steps)
        job = submit_directory(root / "job", loaded=loaded, store=store, state=state)
        daemon = start_daemon(
            root, config_path, extra_env={**storage_env(tb), "SALAD_API_KEY": KEY}
        )
        try:
            wait_for(
                "the job running on SLURM",
                lambda: _running(state, job.id),
                180,
                root,
            )
            salad_before = standin.groups["relay"].body["replicas"] if standin.groups else 0
            state.set_cluster_enabled(hpc.name, False)  # HPC off: at handoff only Salad fits
            end = wait_for(
                "the job completed on a Salad replica",
                lambda: next(iter(_salad_events(store, EventKind.COMPLETED)), None),
                360,
                root,
            )[1]
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=60)
    started = [e for _, e in _salad_events(store, EventKind.STARTED) if e.job_id == job.id]
    assert salad_before == 0  # HPC first: no replica while SLURM could run the job
    assert started and started[0].resumed_from == "checkpoint" and (started[0].step or 0) > 0
    assert end.job_id == job.id and end.step == steps and end.checkpoint is not None
    verify_checkpoint(store, end.checkpoint)
    accounted = slurm(
        tb, hpc.name, "sacct", "-n", "-X", "-P", "-o", "JobName,State", "-S", since
    ).splitlines()
    assert any(line.startswith(JOB_NAME_PREFIX) for line in accounted), accounted
