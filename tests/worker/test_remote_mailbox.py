"""`relaymd-worker --mailbox`: what the mirror copies each way, and the errors a person who
starts a worker by hand can act on (file:// store; the S3 path is in
test_worker_storage_mailbox.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from relaymd.storage import FileStore
from tests.worker.worker_harness import REPO
from worker_entry.remote_mailbox import MailboxMirror, MailboxURLError, mailbox_access


def test_mirror_pulls_daemon_files_and_pushes_only_changed_worker_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "bucket")
    local = tmp_path / "local" / "a1"
    local.mkdir(parents=True)
    mirror = MailboxMirror(store, local, pull_interval_s=1.0)
    store.put_bytes("assignment.json", b'{"a": 1}')
    store.put_bytes("credentials", b"secret")
    mirror.pull()
    assert (local / "assignment.json").read_bytes() == b'{"a": 1}'
    assert (local / "credentials").stat().st_mode & 0o077 == 0  # load_credentials insists
    store.delete_key("assignment.json")  # the daemon withdrew it
    mirror.pull()
    assert not (local / "assignment.json").exists()

    (local / "events.jsonl").write_bytes(b"line\n")
    mirror.push()
    assert store.get_bytes("events.jsonl") == b"line\n"
    store.delete_key("events.jsonl")
    mirror.push()  # unchanged locally: not sent again
    assert not store.exists("events.jsonl")
    (local / "worker.log").write_bytes(b"x" * (200 << 10) + b"last\n")
    mirror.push()
    sent = store.get_bytes("worker.log")
    assert sent.endswith(b"last\n") and len(sent) == 64 << 10  # only the tail goes out


def test_mailbox_url_must_name_an_allocation() -> None:
    with pytest.raises(MailboxURLError, match="s3://bucket"):
        mailbox_access("http://example.org/mailbox/a1", {})
    access = mailbox_access(
        "s3://b/p/mailbox/a1/",
        {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": "http://h"},
    )
    assert access.url == "s3://b/p/mailbox/a1" and access.endpoint_url == "http://h"


def test_no_credentials_in_time_is_one_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RELAYMD_"))}
    env["TMPDIR"] = str(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker_entry",
            "--mailbox",
            f"file://{tmp_path}/bucket/mailbox/a1",
            "--mailbox-poll",
            "0.1",
            "--idle-timeout",
            "0.3",
        ],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "no credentials object" in done.stderr and "Traceback" not in done.stderr
