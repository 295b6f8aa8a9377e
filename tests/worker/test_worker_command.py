"""The command engine with an AToM-like program (examples/atom-like/fake_atom.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaymd.mailbox.models import ControlAction, EventKind
from relaymd.models import StorageAccess
from relaymd.storage.checkpoints import download_checkpoint
from relaymd.storage.keys import checkpoints_prefix, outputs_prefix
from tests.worker.atom_like import (
    REPLICAS,
    assert_exactly_once,
    engine,
    reference_run,
    write_bundle,
)
from tests.worker.worker_harness import TERMINAL, Allocation, Relay, wait_for
from worker_entry.engines.command_log import CAPTURED_LOG


@pytest.mark.slow
@pytest.mark.parametrize("pause", ["line_after_round:1", "round_mid:1"])
def test_atom_like_command_resumes_across_segments(
    tmp_path: Path, file_access: StorageAccess, monkeypatch: pytest.MonkeyPatch, pause: str
) -> None:
    samples = 6
    reference = reference_run(tmp_path / "reference", samples)
    relay = Relay(tmp_path, file_access, "job-atom")
    relay.upload_bundle(write_bundle(tmp_path / "bundle", samples, 0.3, chunk_s=0.02))
    # Every segment's engine waits after its first round and one more sample line, or in the
    # middle of its first round (AToM does not mask SIGTERM there: its handler writes a whole
    # new round); the test then asks the worker to stop (a planned handoff).
    paused = tmp_path / "paused"
    monkeypatch.setenv("FAKE_ATOM_EXIT_SLEEP_S", "0.1")
    monkeypatch.setenv("FAKE_ATOM_PAUSE", pause)
    monkeypatch.setenv("FAKE_ATOM_PAUSE_FILE", str(paused))
    ends = []
    for _ in range(30):
        paused.unlink(missing_ok=True)
        if relay.pointer is not None and relay.pointer.step >= samples:
            # Done: AToM's run at the target is one checkpoint round; let it complete.
            monkeypatch.delenv("FAKE_ATOM_PAUSE", raising=False)
        alloc = relay.assigned(engine(samples))
        alloc.start(idle_timeout=1.0)
        epoch = relay.epoch

        def paused_or_ended(alloc: Allocation = alloc, epoch: int = epoch) -> bool:
            return paused.is_file() or any(
                e.kind in TERMINAL and e.epoch == epoch for e in alloc.events()
            )

        wait_for(paused_or_ended, 60, "the engine paused or the segment ended")
        if paused.is_file():
            alloc.control(ControlAction.STOP, relay.job_id, epoch)
        end = alloc.wait_event(TERMINAL, timeout=60, epoch=epoch)
        assert alloc.wait_exit(60) == 0
        relay.advance(alloc.events())
        ends.append(end)
        if end.kind is EventKind.COMPLETED:
            break
        assert end.kind is EventKind.STOPPED and end.checkpoint is not None
        # The stop checkpoint is a complete set written after the stop request.
        manifest = download_checkpoint(relay.store, end.checkpoint, tmp_path / f"c{relay.epoch}")
        assert {"ckpt_is_valid", "r0/fake_ckpt.xml", "r1/fake_ckpt.xml"} <= {
            f.path for f in manifest.files
        }
    assert len(ends) >= 2 and ends[0].kind is EventKind.STOPPED, [(e.kind, e.step) for e in ends]
    assert ends[-1].kind is EventKind.COMPLETED and ends[-1].step == samples
    # The final segment's sample files hold every sample exactly once: resumed, never redone.
    prefix = outputs_prefix(relay.job_id, relay.epoch)
    got = {k: relay.store.get_bytes(f"{prefix}r{k}/fake.out") for k in range(REPLICAS)}
    assert_exactly_once(got, reference, samples)


def test_command_exit_zero_short_of_target_is_a_failure(
    tmp_path: Path, file_access: StorageAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_ATOM_CRASH", "1")
    relay = Relay(tmp_path, file_access, "job-crash")
    relay.upload_bundle(write_bundle(tmp_path / "bundle", 10))
    alloc = relay.assigned(engine(10))
    alloc.start(idle_timeout=1.0)
    failed = alloc.wait_event({EventKind.FAILED}, timeout=60)
    assert alloc.wait_exit(60) == 0
    assert "exited 0 with 0 of 10 samples" in (failed.reason or "")
    assert any("No compute devices are alive" in line for line in failed.log_tail)
    assert relay.store.list_keys(checkpoints_prefix(relay.job_id)) == []


def test_a_stop_kills_the_engine_once_its_checkpoint_is_captured(
    tmp_path: Path, file_access: StorageAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AToM sleeps 20 s after SIGTERM once its checkpoint is valid; a SIGKILL then is harmless,
    and a second SIGTERM would re-enter its handler (another checkpoint round, another sleep)
    and hold the handoff past the allocation's end. The engine gets one SIGTERM, then SIGKILL."""
    samples = 6
    relay = Relay(tmp_path, file_access, "job-atom-kill")
    relay.upload_bundle(write_bundle(tmp_path / "bundle", samples, 0.3, chunk_s=0.02))
    paused = tmp_path / "paused"
    monkeypatch.setenv("FAKE_ATOM_EXIT_SLEEP_S", "30")
    monkeypatch.setenv("FAKE_ATOM_PAUSE", "line_after_round:1")
    monkeypatch.setenv("FAKE_ATOM_PAUSE_FILE", str(paused))
    alloc = relay.assigned(engine(samples))
    alloc.start(idle_timeout=1.0)
    wait_for(paused.is_file, 60, "the engine paused after its first round")
    alloc.control(ControlAction.STOP, relay.job_id, relay.epoch)
    end = alloc.wait_event(TERMINAL, timeout=120, epoch=relay.epoch)
    assert alloc.wait_exit(120) == 0
    assert end.kind is EventKind.STOPPED and end.checkpoint is not None
    log = relay.store.get_bytes(f"{outputs_prefix(relay.job_id, relay.epoch)}{CAPTURED_LOG}")
    assert log.decode().count("Termination signal") == 1, log.decode()[-2000:]
