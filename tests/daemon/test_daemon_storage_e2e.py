"""A `storage` cluster end to end (ADR 0022): a real daemon with no login node and no shared
folder, a real `relaymd-worker --mailbox file://...` a person would start on their own machine,
a real (tiny) OpenMM job. The worker joins through the bucket, the daemon adopts it as an idle
allocation, binds the job, and the job completes; the verdict is read from the bucket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from relaymd.config import load_config
from relaymd.mailbox.files import read_events
from relaymd.mailbox.models import EventKind, WorkerEvent
from relaymd.models import AllocationState
from relaymd.storage import FileStore
from relaymd.storage.checkpoints import verify_checkpoint
from tests.daemon.daemon_e2e_support import (
    REPO,
    local_config,
    start_daemon,
    wait_for,
    write_spec,
    write_tiny_system,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _storage_cluster() -> dict[str, object]:
    return {
        "name": "byo",
        "scheduler": "storage",
        "partitions": [
            {"name": "any", "walltime_minutes": 60, "gpus_per_allocation": 0, "max_running": 4}
        ],
        "native_worker": ["relaymd-worker"],
        "poll": {"min_interval_s": 0.5, "max_interval_s": 1.0},
    }


def _start_worker(root: Path, mailbox: str) -> subprocess.Popen[bytes]:
    # The worker's own disk: nothing there is read by the test.
    tmp = root / f"workstation-{mailbox.rsplit('/', 1)[-1]}"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RELAYMD_"))}
    env.update(PYTHONPATH=str(REPO), TMPDIR=str(tmp))
    args = [
        sys.executable, "-m", "worker_entry", "--mailbox", mailbox, "--mailbox-poll", "0.5",
        "--heartbeat-interval", "1", "--idle-timeout", "60", "--platform", "Reference",
        "--margin-min", "1", "--margin-max", "2",
    ]  # fmt: skip
    log = open(root / "worker.log", "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=log)


def _bucket_events(bucket: FileStore, alloc_id: str, root: Path) -> list[WorkerEvent]:
    """The worker's events as they are in the bucket (parsed from a copy)."""
    key = f"mailbox/{alloc_id}/events.jsonl"
    copy = root / f"{alloc_id}.events.jsonl"
    copy.write_bytes(bucket.get_bytes(key) if bucket.exists(key) else b"")
    return read_events(copy, 0)[0]


def _first(events: list[WorkerEvent], kind: EventKind) -> WorkerEvent | None:
    return next((e for e in events if e.kind is kind), None)


def _setup(root: Path, monkeypatch: pytest.MonkeyPatch, steps: int) -> tuple[Any, ...]:
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.state import StateStore
    from relaymd.storage import open_store
    from relaymd.submission.submit import submit_directory

    monkeypatch.setenv("RELAYMD_STATE_DIR", str(root / "state"))
    monkeypatch.setenv("RELAYMD_DATA_DIR", str(root / "data"))
    config_path = local_config(root, walltime_s=600, clusters=[_storage_cluster()])
    monkeypatch.setenv("RELAYMD_CONFIG", str(config_path))
    loaded = load_config(config_path)
    job_dir = root / "job"
    write_tiny_system(job_dir)
    write_spec(job_dir, "byo relay", steps)
    store = open_store(storage_access(loaded.config, make_secrets_provider(loaded.config.secrets)))
    state = StateStore.open(Path(loaded.config.state_path))
    job = submit_directory(job_dir, loaded=loaded, store=store, state=state)
    return config_path, loaded.config.storage.url, store, state, job


def test_a_workstation_joins_through_the_bucket_and_runs_a_job(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path
    config_path, url, store, state, job = _setup(root, monkeypatch, 400)
    daemon = start_daemon(root, config_path)
    worker = _start_worker(root, f"{url}/mailbox/ws1")
    try:
        joined = wait_for("the worker joined", lambda: state.get_allocation("ws1"), 60, root)
        assert joined.cluster == "byo" and joined.state is AllocationState.RUNNING
        bucket = FileStore.from_url(url)

        end = wait_for(
            "the job completed on the workstation",
            lambda: _first(_bucket_events(bucket, "ws1", root), EventKind.COMPLETED),
            240,
            root,
        )
    finally:
        for proc in (daemon, worker):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    assert end.job_id == job.id and end.step == 400 and end.checkpoint is not None
    verify_checkpoint(store, end.checkpoint)
    assert "allocation_joined" in [e.kind for e in state.list_events(limit=200)]


def test_a_killed_workstation_is_written_off_and_another_resumes_its_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path
    config_path, url, store, state, job = _setup(root, monkeypatch, 4000)
    bucket = FileStore.from_url(url)
    daemon = start_daemon(root, config_path)
    first = _start_worker(root, f"{url}/mailbox/ws1")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(
            "a checkpoint of the first workstation in the bucket",
            lambda: _first(_bucket_events(bucket, "ws1", root), EventKind.CHECKPOINT),
            120,
            root,
        )
        first.send_signal(signal.SIGKILL)  # mid-segment: no handoff, no last words
        first.wait(timeout=30)
        second = _start_worker(root, f"{url}/mailbox/ws2")
        started = wait_for(
            "the second workstation resumed the job",
            lambda: _first(_bucket_events(bucket, "ws2", root), EventKind.STARTED),
            120,
            root,
        )
        end = wait_for(
            "the job completed on the second workstation",
            lambda: _first(_bucket_events(bucket, "ws2", root), EventKind.COMPLETED),
            300,
            root,
        )
    finally:
        for proc in (daemon, first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    killed = _bucket_events(bucket, "ws1", root)
    newest = max(e.step or 0 for e in killed if e.kind is EventKind.CHECKPOINT)
    assert started.job_id == job.id and started.epoch == 2
    assert started.resumed_from == "checkpoint" and 0 < (started.step or 0) <= newest
    assert end.step == 4000 and end.checkpoint is not None
    verify_checkpoint(store, end.checkpoint)
    ended = state.get_allocation("ws1")
    assert ended is not None and ended.state is AllocationState.ENDED
