"""A `salad` cluster end to end (ADR 0025): a real daemon provisions a container group on the
SaladCloud stand-in, whose replicas are real `relaymd-worker --mailbox file://...` processes
with private folders (no shared filesystem). They join through the bucket and run a tiny real
OpenMM job with periodic checkpoints. Replicas are SIGKILLed (the stand-in drops them from its
instance list and starts another on a new machine), the daemon is SIGKILLed and restarted.
`stale_after_s` is an hour in these runs, so a job can only move on from a vanished replica
through the instance-list cross-check. Verdicts come from the bucket (events, checkpoints, the
assembled outputs) and from the stand-in's own record of replicas, not from the daemon's state."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relaymd.assemble import assemble_outputs
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
REPORT_EVERY = 100  # write_spec's state-data interval
# Only the instance list can end a vanished replica within a test's bounds.
DAEMON = {"stale_after_s": 3600, "stop_grace_s": 4, "min_segment_s": 2}


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


@dataclass
class SaladRun:
    """The stand-in, one submitted job and a daemon process that may be killed and restarted."""

    root: Path
    standin: SaladStandin
    config_path: Path
    store: Any
    state: Any
    job: Any
    daemon: subprocess.Popen[bytes] | None = None

    @property
    def bucket(self) -> Path:
        return self.root / "storage"

    def start_daemon(self) -> None:
        self.daemon = start_daemon(self.root, self.config_path, extra_env={"SALAD_API_KEY": KEY})

    def kill_daemon(self) -> None:
        assert self.daemon is not None
        kill9(self.daemon)

    def checkpoints_with_the_daemon_down(self, more: int) -> None:
        """A first checkpoint, the daemon SIGKILLed, then `more` checkpoints (or the job's
        completion) written to the bucket while it is down."""
        self.wait("a first checkpoint", lambda: _with(self.bucket, EventKind.CHECKPOINT))
        self.kill_daemon()
        seen = len(_with(self.bucket, EventKind.CHECKPOINT))
        self.wait(
            f"{more} more checkpoint(s) with no daemon",
            lambda: (
                len(_with(self.bucket, EventKind.CHECKPOINT)) >= seen + more
                or _with(self.bucket, EventKind.COMPLETED)
            ),
        )

    def wait(self, what: str, check: Any, timeout: float = 180) -> Any:
        return wait_for(what, check, timeout, self.root)

    def finish(self) -> WorkerEvent:
        """The job's completion in the bucket, then the group scaled to zero once idle."""
        end = self.wait(
            "the job completed",
            lambda: next((e for _, e in _with(self.bucket, EventKind.COMPLETED)), None),
            300,
        )
        self.wait(
            "the group scaled to zero once idle",
            lambda: self.standin.groups["relay"].body["replicas"] == 0 or None,
            60,
        )
        return end  # type: ignore[no-any-return]

    def mine(self, kind: EventKind) -> list[tuple[Path, WorkerEvent]]:
        return [(m, e) for m, e in _with(self.bucket, kind) if e.job_id == self.job.id]


@contextmanager
def salad_run(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SaladRun]:
    """A job submitted to a config whose only cluster is the stand-in's group, and a daemon
    started on it; the daemon is stopped (SIGTERM) and the stand-in's replicas killed after."""
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.state import StateStore
    from relaymd.submission.submit import submit_directory

    standin = SaladStandin(
        api_key=KEY, organization="lab", project="md", images={IMAGE}, root=root,
        extra_path=str(Path(sys.executable).parent), seed=11,
    )  # fmt: skip
    with standin:
        monkeypatch.setenv("RELAYMD_STATE_DIR", str(root / "state"))
        monkeypatch.setenv("RELAYMD_DATA_DIR", str(root / "data"))
        clusters = [_salad_cluster(standin.url)]
        config_path = local_config(root, walltime_s=600, clusters=clusters, daemon=DAEMON)
        loaded = load_config(config_path)
        write_tiny_system(root / "job")
        write_spec(root / "job", "salad relay", STEPS)
        access = storage_access(loaded.config, make_secrets_provider(loaded.config.secrets))
        store = open_store(access)
        state = StateStore.open(Path(loaded.config.state_path))
        job = submit_directory(root / "job", loaded=loaded, store=store, state=state)
        run = SaladRun(root, standin, config_path, store, state, job)
        run.start_daemon()
        try:
            yield run
        finally:
            if run.daemon is not None and run.daemon.poll() is None:
                run.daemon.send_signal(signal.SIGTERM)
                run.daemon.wait(timeout=60)


def _assembled_steps(run: SaladRun) -> list[int]:
    """The state-data steps of the job's outputs in the bucket, assembled as a user would."""
    copy = run.root / "download"
    shutil.copytree(run.bucket / "jobs" / run.job.id / "outputs", copy / "outputs")
    assembled = assemble_outputs(copy)
    assert assembled.state_data is not None
    rows = assembled.state_data.read_text().splitlines()[1:]
    return [int(row.split(",")[0]) for row in rows]


def _assert_done_once(run: SaladRun, end: WorkerEvent) -> None:
    assert end.job_id == run.job.id and end.step == STEPS and end.checkpoint is not None
    verify_checkpoint(run.store, end.checkpoint)
    assert len(run.mine(EventKind.COMPLETED)) == 1
    assert _assembled_steps(run) == list(range(REPORT_EVERY, STEPS + 1, REPORT_EVERY))
    assert KEY not in (run.root / "daemon.log").read_text()
    job_now = run.state.get_job(run.job.id)
    assert job_now is not None and job_now.retries == 0  # a vanished replica costs no retry


def test_a_job_relays_across_interrupted_salad_replicas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(11)
    with salad_run(tmp_path, monkeypatch) as run:
        kill_at = rng.randint(1, 3)  # the checkpoint after which the replica dies
        run.wait(
            f"checkpoint {kill_at} on a Salad replica",
            lambda: len(_with(run.bucket, EventKind.CHECKPOINT)) >= kill_at or None,
        )
        killed_box = _with(run.bucket, EventKind.CHECKPOINT)[-1][0]
        killed_at = datetime.now(UTC)
        assert run.standin.kill_one("relay") is not None
        end = run.finish()
        group = run.standin.groups["relay"]
    newest = max(e.step or 0 for e in _events(killed_box) if e.kind is EventKind.CHECKPOINT)
    resumed = [e for m, e in run.mine(EventKind.STARTED) if m != killed_box]
    assert resumed and resumed[0].resumed_from == "checkpoint"
    # The stand-in's instance list, not the hour-long stale_after_s, ended the killed replica.
    print(f"salad_failover_s={(resumed[0].at - killed_at).total_seconds():.1f}")
    assert 0 < (resumed[0].step or 0) <= newest  # lost work: at most since the last checkpoint
    _assert_done_once(run, end)
    assert group.killed == 1 and group.started >= 2
    assert group.body["container"]["image"] == IMAGE
    assert any(path.endswith("/containers/relay/instances") for _, path in run.standin.requests)


def test_salad_workers_run_on_while_the_daemon_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon is SIGKILLed mid-segment and restarted: the replica keeps checkpointing to
    the bucket meanwhile, the new daemon takes the group and the allocation as they are, and
    the job completes once, on the one replica, with no step run twice."""
    with salad_run(tmp_path, monkeypatch) as run:
        run.checkpoints_with_the_daemon_down(2)
        run.start_daemon()
        end = run.finish()
        group = run.standin.groups["relay"]
    assert len(run.mine(EventKind.STARTED)) == 1  # one segment: nothing ran twice
    _assert_done_once(run, end)
    assert group.killed == 0 and group.started == 1


def test_a_replica_interrupted_while_the_daemon_is_down_is_taken_over_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the daemon down, a replica checkpoints, is SIGKILLed, and SaladCloud's restart
    policy starts another, which announces itself in the bucket and waits. The restarted
    daemon reads the checkpoints it missed, ends the vanished replica from the instance list,
    and the new one resumes from the newest of them: nothing lost, nothing run twice."""
    with salad_run(tmp_path, monkeypatch) as run:
        run.checkpoints_with_the_daemon_down(1)
        killed_box = _with(run.bucket, EventKind.CHECKPOINT)[-1][0]
        assert run.standin.kill_one("relay") is not None
        run.wait(
            "the next replica announced in the bucket",
            lambda: any(m != killed_box for m in _salad_mailboxes(run.bucket)) or None,
        )
        run.start_daemon()
        end = run.finish()
    written = [e for e in _events(killed_box) if e.kind is EventKind.CHECKPOINT]
    resumed = [e for m, e in run.mine(EventKind.STARTED) if m != killed_box]
    assert len(resumed) == 1 and resumed[0].resumed_from == "checkpoint"
    assert resumed[0].step == max(e.step or 0 for e in written)  # the outage's checkpoint kept
    _assert_done_once(run, end)
