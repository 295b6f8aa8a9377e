"""The command engine with an AToM-like program (examples/atom-like/fake_atom.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from atom_like import REPLICAS, engine, reference_samples, write_bundle
from worker_harness import Relay

from relaymd.models import EventKind, StorageAccess
from relaymd.storage.checkpoints import download_checkpoint
from relaymd.storage.keys import checkpoints_prefix, outputs_prefix


@pytest.mark.slow
def test_atom_like_command_resumes_across_segments(
    tmp_path: Path, file_access: StorageAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = 20
    monkeypatch.setenv("FAKE_ATOM_EXIT_SLEEP_S", "0.1")
    reference = reference_samples(tmp_path / "reference", samples)
    relay = Relay(tmp_path, file_access, "job-atom")
    # Slow enough that each stop lands mid-run: the job needs several segments.
    relay.upload_bundle(write_bundle(tmp_path / "bundle", samples, 0.3, chunk_s=0.05))
    ends = []
    for _ in range(10):
        _, end = relay.run_segment(engine(samples), 1)
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
    # The final segment's sample files hold every sample exactly once: resumed, never redone.
    for k in range(REPLICAS):
        key = outputs_prefix(relay.job_id, relay.epoch) + f"r{k}/fake.out"
        assert relay.store.get_bytes(key) == reference[k]


def test_command_exit_zero_short_of_target_is_a_failure(
    tmp_path: Path, file_access: StorageAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_ATOM_CRASH", "1")
    relay = Relay(tmp_path, file_access, "job-crash")
    relay.upload_bundle(write_bundle(tmp_path / "bundle", 10))
    alloc = relay.allocation()
    alloc.assign(relay.assignment(alloc, engine(10)))
    alloc.start(idle_timeout=1.0)
    failed = alloc.wait_event({EventKind.FAILED}, timeout=60)
    assert alloc.wait_exit(60) == 0
    assert "exited 0 with 0 of 10 samples" in (failed.reason or "")
    assert any("No compute devices are alive" in line for line in failed.log_tail)
    assert relay.store.list_keys(checkpoints_prefix(relay.job_id)) == []
