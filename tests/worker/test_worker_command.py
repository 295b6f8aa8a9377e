"""The command engine with an AToM-like program (examples/atom-like/fake_atom.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from worker_harness import EXAMPLES, Relay

from relaymd.models import EventKind, StorageAccess
from relaymd.storage.checkpoints import download_checkpoint
from relaymd.storage.keys import checkpoints_prefix, outputs_prefix


def _engine(samples: int, *extra: str) -> dict[str, object]:
    return {
        "kind": "command",
        "preset": "atom",
        "command": [
            sys.executable,
            "fake_atom.py",
            "--samples",
            str(samples),
            "--cycle-s",
            "0.08",
            *extra,
        ],
        "target_samples": samples,
        "settle_s": 0.1,
        "stop_grace_s": 20,
        "startup_timeout_s": 30,
    }


@pytest.fixture
def atom_bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "atom-bundle"
    folder.mkdir()
    shutil.copy(EXAMPLES / "atom-like" / "fake_atom.py", folder)
    return folder


@pytest.mark.slow
def test_atom_like_command_resumes_across_segments(
    tmp_path: Path, file_access: StorageAccess, atom_bundle: Path
) -> None:
    samples = 60
    relay = Relay(tmp_path, file_access, "job-atom")
    relay.upload_bundle(atom_bundle)
    ends = []
    for _ in range(10):
        _, end = relay.run_segment(_engine(samples), 1)
        ends.append(end)
        if end.kind is EventKind.COMPLETED:
            break
        assert end.kind is EventKind.STOPPED and end.checkpoint is not None
        # The stop checkpoint is a complete set written after the stop request.
        manifest = download_checkpoint(relay.store, end.checkpoint, tmp_path / f"c{relay.epoch}")
        assert {"ckpt_is_valid", "r0/fake_ckpt.xml", "r1/fake_ckpt.xml"} <= {
            f.path for f in manifest.files
        }
    assert len(ends) >= 3, [(e.kind, e.step) for e in ends]
    assert ends[-1].kind is EventKind.COMPLETED and ends[-1].step == samples
    # The final segment's sample files hold every cycle exactly once: resumed, never redone.
    for k in (0, 1):
        key = outputs_prefix(relay.job_id, relay.epoch) + f"r{k}/fake.out"
        lines = relay.store.get_bytes(key).decode().splitlines()
        assert lines == [f"sample {i}" for i in range(1, samples + 1)]


def test_command_exit_zero_short_of_target_is_a_failure(
    tmp_path: Path, file_access: StorageAccess, atom_bundle: Path
) -> None:
    relay = Relay(tmp_path, file_access, "job-crash")
    relay.upload_bundle(atom_bundle)
    alloc = relay.allocation()
    alloc.assign(relay.assignment(alloc, _engine(10, "--crash")))
    alloc.start(idle_timeout=1.0)
    failed = alloc.wait_event({EventKind.FAILED}, timeout=60)
    assert alloc.wait_exit(60) == 0
    assert "exited 0 with 0 of 10 samples" in (failed.reason or "")
    assert any("GPU workers crashed" in line for line in failed.log_tail)
    assert relay.store.list_keys(checkpoints_prefix(relay.job_id)) == []
