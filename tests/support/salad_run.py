"""A `salad` cluster run for end-to-end tests and the failover bench (ADR 0025): the
SaladCloud stand-in, one tiny real OpenMM job submitted to a config whose only cluster is the
stand-in's container group, and a real daemon process that may be SIGKILLed and restarted.
What it reads back comes from the file:// bucket (the mailboxes' events), not the daemon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaymd.config import load_config
from relaymd.mailbox.files import read_events
from relaymd.mailbox.models import EventKind, WorkerEvent
from relaymd.storage import open_store
from tests.daemon.daemon_e2e_support import (
    kill9,
    local_config,
    start_daemon,
    wait_for,
    write_spec,
    write_tiny_system,
)
from tests.support.salad_standin import SaladStandin

KEY = "salad-e2e-key-5f1c"
IMAGE = "ghcr.io/lab/relaymd-worker:test"
GROUP = "relay"


def salad_cluster(api_url: str, cluster: dict[str, Any], salad: dict[str, Any]) -> dict[str, Any]:
    """A one-replica `salad` cluster on the stand-in; `cluster` and `salad` add settings."""
    return {
        "name": "salad",
        "scheduler": "salad",
        "partitions": [
            {"name": "any", "walltime_minutes": 600, "gpus_per_allocation": 0, "max_running": 4}
        ],
        "images": {"openmm": {"uri": f"docker://{IMAGE}"}},  # the image profile it runs
        "salad": {
            "organization": "lab", "project": "md", "container_group": GROUP, "image": IMAGE,
            "api_url": api_url, "max_replicas": 1, "wait_before_s": 0, **salad,
        },
        **cluster,
    }  # fmt: skip


def events(mailbox: Path) -> list[WorkerEvent]:
    path = mailbox / "events.jsonl"
    return read_events(path, 0)[0] if path.exists() else []


def salad_mailboxes(bucket: Path) -> list[Path]:
    root = bucket / "mailbox"
    return sorted(root.glob("salad-*"), key=lambda p: p.stat().st_mtime) if root.exists() else []


def with_kind(bucket: Path, kind: EventKind) -> list[tuple[Path, WorkerEvent]]:
    """(mailbox, event) of every event of `kind` in the bucket's Salad mailboxes."""
    return [(m, e) for m in salad_mailboxes(bucket) for e in events(m) if e.kind is kind]


@dataclass
class SaladRun:
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

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 180) -> Any:
        return wait_for(what, check, timeout, self.root)

    def checkpoints(self) -> int:
        return len(with_kind(self.bucket, EventKind.CHECKPOINT))

    def checkpoints_with_the_daemon_down(self, more: int) -> None:
        """A first checkpoint, the daemon SIGKILLed, then `more` checkpoints (or the job's
        completion) written to the bucket while it is down."""
        self.wait("a first checkpoint", lambda: self.checkpoints() or None)
        self.kill_daemon()
        seen = self.checkpoints()
        self.wait(
            f"{more} more checkpoint(s) with no daemon",
            lambda: (
                self.checkpoints() >= seen + more or with_kind(self.bucket, EventKind.COMPLETED)
            ),
        )

    def finish(self) -> WorkerEvent:
        """The job's completion in the bucket, then the group scaled to zero once idle."""
        end = self.wait(
            "the job completed",
            lambda: next((e for _, e in with_kind(self.bucket, EventKind.COMPLETED)), None),
            300,
        )
        self.wait(
            "the group scaled to zero once idle",
            lambda: self.standin.groups[GROUP].body["replicas"] == 0 or None,
            60,
        )
        assert isinstance(end, WorkerEvent)
        return end

    def mine(self, kind: EventKind) -> list[tuple[Path, WorkerEvent]]:
        return [(m, e) for m, e in with_kind(self.bucket, kind) if e.job_id == self.job.id]


@dataclass
class RunSettings:
    """The job's size and what the run sets in the config."""

    steps: int
    checkpoint_s: float = 2.0
    daemon: dict[str, Any] | None = None
    worker: dict[str, Any] | None = None
    cluster: dict[str, Any] | None = None
    salad: dict[str, Any] | None = None
    start_delay_s: float = 0.0


@contextmanager
def salad_run(
    root: Path, settings: RunSettings, setenv: Callable[[str, str], None] = os.environ.__setitem__
) -> Iterator[SaladRun]:
    """The stand-in, the job submitted and a daemon started; at the end the daemon is stopped
    (SIGTERM) and the stand-in kills its replicas."""
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.state import StateStore
    from relaymd.submission.submit import submit_directory

    standin = SaladStandin(
        api_key=KEY, organization="lab", project="md", images={IMAGE}, root=root,
        extra_path=str(Path(sys.executable).parent), seed=11,
        start_delay_s=settings.start_delay_s,
    )  # fmt: skip
    with standin:
        setenv("RELAYMD_STATE_DIR", str(root / "state"))
        setenv("RELAYMD_DATA_DIR", str(root / "data"))
        cluster = salad_cluster(standin.url, settings.cluster or {}, settings.salad or {})
        # None keeps local_config's fast test values; {} means the shipped defaults.
        sections = {"daemon": settings.daemon, "worker": settings.worker}
        overrides = {k: v for k, v in sections.items() if v is not None}
        config_path = local_config(root, walltime_s=600, clusters=[cluster], **overrides)
        loaded = load_config(config_path)
        write_tiny_system(root / "job")
        write_spec(root / "job", "salad relay", settings.steps, settings.checkpoint_s)
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
