"""A `salad` cluster end to end (ADR 0025): a real daemon provisions a container group on the
SaladCloud stand-in, whose replicas are real `relaymd-worker --mailbox file://...` processes
with private folders (no shared filesystem). They join through the bucket, run a tiny real
OpenMM job with periodic checkpoints; one replica is SIGKILLed at a random checkpoint (seeded
RNG); the stand-in starts another on a new machine and the job resumes from the bucket. When
the job is done the daemon scales the group to zero. Verdicts come from the bucket and from
the stand-in's own record of replicas, not from the daemon's state."""

from __future__ import annotations

import random
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relaymd.config import load_config
from relaymd.mailbox.files import read_events
from relaymd.mailbox.models import EventKind, WorkerEvent
from relaymd.storage import open_store
from relaymd.storage.checkpoints import verify_checkpoint
from tests.daemon.daemon_e2e_support import (
    kill9,
    local_config,
    start_daemon,
    wait_for,
    write_spec,
    write_tiny_system,
)
from tests.support.salad_standin import SaladStandin

pytestmark = [pytest.mark.slow, pytest.mark.timeout(500)]
KEY = "salad-e2e-key-5f1c"
IMAGE = "ghcr.io/lab/relaymd-worker:test"
STEPS = 4000


def _salad_cluster(api_url: str) -> dict[str, object]:
    return {
        "name": "salad",
        "scheduler": "salad",
        "partitions": [
            {"name": "any", "walltime_minutes": 600, "gpus_per_allocation": 0, "max_running": 4}
        ],
        "poll": {"min_interval_s": 0.5, "max_interval_s": 1.0},
        "images": {"openmm": {"uri": f"docker://{IMAGE}"}},  # the image profile it runs
        "salad": {
            "organization": "lab", "project": "md", "container_group": "relay",
            "image": IMAGE, "api_url": api_url, "max_replicas": 1, "wait_before_s": 0,
            "mailbox_poll_s": 0.5,
            "worker_args": ["--heartbeat-interval", "1", "--idle-timeout", "60",
                            "--platform", "Reference", "--margin-min", "1", "--margin-max", "2"],
        },
    }  # fmt: skip


def _events(mailbox: Path) -> list[WorkerEvent]:
    path = mailbox / "events.jsonl"
    return read_events(path, 0)[0] if path.exists() else []


def _salad_mailboxes(bucket: Path) -> list[Path]:
    root = bucket / "mailbox"
    return sorted(root.glob("salad-*"), key=lambda p: p.stat().st_mtime) if root.exists() else []


def _with(bucket: Path, kind: EventKind) -> list[tuple[Path, WorkerEvent]]:
    return [(m, e) for m in _salad_mailboxes(bucket) for e in _events(m) if e.kind is kind]


def _standin(root: Path) -> SaladStandin:
    return SaladStandin(
        api_key=KEY, organization="lab", project="md", images={IMAGE}, root=root,
        extra_path=str(Path(sys.executable).parent), seed=11,
    )  # fmt: skip


def _submit(root: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> tuple[Any, ...]:
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.state import StateStore
    from relaymd.submission.submit import submit_directory

    monkeypatch.setenv("RELAYMD_STATE_DIR", str(root / "state"))
    monkeypatch.setenv("RELAYMD_DATA_DIR", str(root / "data"))
    config_path = local_config(root, walltime_s=600, clusters=[_salad_cluster(url)])
    loaded = load_config(config_path)
    write_tiny_system(root / "job")
    write_spec(root / "job", "salad relay", STEPS)
    access = storage_access(loaded.config, make_secrets_provider(loaded.config.secrets))
    store = open_store(access)
    state = StateStore.open(Path(loaded.config.state_path))
    job = submit_directory(root / "job", loaded=loaded, store=store, state=state)
    return config_path, store, state, job


def test_a_job_relays_across_interrupted_salad_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, rng = tmp_path, random.Random(11)
    standin = _standin(root)
    with standin:
        config_path, store, state, job = _submit(root, monkeypatch, standin.url)
        bucket = root / "storage"
        daemon = start_daemon(root, config_path, extra_env={"SALAD_API_KEY": KEY})
        try:
            kill_at = rng.randint(1, 3)  # the checkpoint after which the replica dies
            wait_for(
                f"checkpoint {kill_at} on a Salad replica",
                lambda: len(_with(bucket, EventKind.CHECKPOINT)) >= kill_at or None,
                180,
                root,
            )
            killed_box = _with(bucket, EventKind.CHECKPOINT)[-1][0]
            killed_at = datetime.now(UTC)
            assert standin.kill_one("relay") is not None
            end = wait_for(
                "the job completed on another replica",
                lambda: next((e for _, e in _with(bucket, EventKind.COMPLETED)), None),
                300,
                root,
            )
            wait_for(
                "the group scaled to zero once idle",
                lambda: standin.groups["relay"].body["replicas"] == 0 or None,
                60,
                root,
            )
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=60)
        group = standin.groups["relay"]
    killed = [e for e in _events(killed_box) if e.kind is EventKind.CHECKPOINT]
    newest = max(e.step or 0 for e in killed)
    resumed = [
        e for m, e in _with(bucket, EventKind.STARTED) if m != killed_box and e.job_id == job.id
    ]
    assert resumed and resumed[0].resumed_from == "checkpoint"
    # The figure in docs/benchmarks.md: SIGKILL to the job's restart on the next replica.
    print(f"salad_failover_s={(resumed[0].at - killed_at).total_seconds():.1f}")
    assert 0 < (resumed[0].step or 0) <= newest  # lost work: at most since the last checkpoint
    assert end.job_id == job.id and end.step == STEPS and end.checkpoint is not None
    verify_checkpoint(store, end.checkpoint)
    assert group.killed == 1 and group.started >= 2
    assert group.body["container"]["image"] == IMAGE
    assert KEY not in (root / "daemon.log").read_text()
    job_now = state.get_job(job.id)
    assert job_now is not None and job_now.retries == 0  # the vanished replica cost no retry


def test_salad_workers_run_on_while_the_daemon_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon is SIGKILLed mid-segment and restarted: the replica keeps checkpointing to
    the bucket meanwhile, the new daemon takes the group and the allocation as they are, and
    the job completes once, on the one replica, with no step run twice."""
    root = tmp_path
    with _standin(root) as standin:
        config_path, store, _state, job = _submit(root, monkeypatch, standin.url)
        bucket, env = root / "storage", {"SALAD_API_KEY": KEY}
        daemon = start_daemon(root, config_path, extra_env=env)
        try:
            wait_for("a first checkpoint", lambda: _with(bucket, EventKind.CHECKPOINT), 180, root)
            kill9(daemon)
            seen = len(_with(bucket, EventKind.CHECKPOINT))
            wait_for(
                "two more checkpoints with no daemon",
                lambda: (
                    len(_with(bucket, EventKind.CHECKPOINT)) >= seen + 2
                    or _with(bucket, EventKind.COMPLETED)
                ),
                180,
                root,
            )
            daemon = start_daemon(root, config_path, extra_env=env)
            end = wait_for(
                "the job completed",
                lambda: next((e for _, e in _with(bucket, EventKind.COMPLETED)), None),
                300,
                root,
            )
            wait_for(
                "the group scaled to zero once idle",
                lambda: standin.groups["relay"].body["replicas"] == 0 or None,
                60,
                root,
            )
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=60)
        group = standin.groups["relay"]
    starts = [e for _, e in _with(bucket, EventKind.STARTED) if e.job_id == job.id]
    completions = [e for _, e in _with(bucket, EventKind.COMPLETED) if e.job_id == job.id]
    assert len(starts) == 1 and len(completions) == 1  # one segment: nothing ran twice
    assert end.job_id == job.id and end.step == STEPS and end.checkpoint is not None
    verify_checkpoint(store, end.checkpoint)
    assert group.killed == 0 and group.started == 1
