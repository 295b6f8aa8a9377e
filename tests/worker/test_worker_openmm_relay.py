"""Real OpenMM (Reference platform, ~200-atom water box) relayed by real worker processes."""

from __future__ import annotations

import re
import signal
from itertools import pairwise
from pathlib import Path

import pytest

from relaymd.mailbox.files import read_events
from relaymd.mailbox.models import ControlAction, EventKind, WorkerEvent
from relaymd.models import (
    CheckpointRef,
    StorageAccess,
)
from relaymd.storage import ObjectStore
from relaymd.storage.checkpoints import download_checkpoint, list_checkpoints, verify_checkpoint
from relaymd.storage.keys import outputs_prefix
from tests.moto_server import SECRET_ACCESS_KEY
from tests.worker.worker_harness import (
    CHECKPOINT_EVERY,
    MARGIN_MAX_S,
    Allocation,
    Relay,
    deadline_windows,
    openmm_engine,
    wait_for,
)


def _final_state(store: ObjectStore, ref: CheckpointRef, dest: Path) -> str:
    download_checkpoint(store, ref, dest)
    return (dest / "state.xml").read_text()


def _block(xml: str, tag: str) -> str:
    match = re.search(rf"<{tag}>.*?</{tag}>", xml, re.S)
    assert match, tag
    return match.group(0)


_CHUNK = re.compile(r"/outputs/(\d+)/state_data\.(\d{10})-(\d{10})\.csv$")


def _state_data_chunks(relay: Relay) -> list[tuple[int, int, int]]:
    """(epoch, start step, end step) of every uploaded state-data chunk, in step order."""
    chunks = []
    for key in relay.store.list_keys(f"jobs/{relay.job_id}/outputs/"):
        match = _CHUNK.search(key)
        if match:
            chunks.append((int(match[1]), int(match[2]), int(match[3])))
    return sorted(chunks, key=lambda c: (c[1], c[0]))


def _assert_contiguous(chunks: list[tuple[int, int, int]], total: int) -> None:
    """Chunks tile steps 0..total with neither gap nor overlap, epochs never going back."""
    assert chunks and chunks[0][1] == 0 and chunks[-1][2] == total, chunks
    for (e1, _, end), (e2, start, _) in pairwise(chunks):
        assert start == end and e2 >= e1, chunks


def _checkpoints_of(events: list[WorkerEvent], epoch: int) -> list[WorkerEvent]:
    return [e for e in events if e.kind is EventKind.CHECKPOINT and e.epoch == epoch]


@pytest.mark.slow
def test_relay_across_segments_is_bitwise_identical(
    tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    total = 260
    single = Relay(tmp_path / "single", file_access, "job-single")
    single.upload_bundle(bundle_dir)
    _, end = single.run_segment(openmm_engine(total), None)
    assert end.kind is EventKind.COMPLETED and end.step == total
    assert end.checkpoint is not None and end.checkpoint.step == total
    reference = _final_state(single.store, end.checkpoint, tmp_path / "ref")

    relay = Relay(tmp_path / "relay", file_access, "job-relay")
    relay.upload_bundle(bundle_dir)
    ends: list[WorkerEvent] = []
    starts: list[WorkerEvent] = []
    for _ in range(20):
        alloc, end = relay.run_segment(openmm_engine(total), stop_after_checkpoints=1)
        ends.append(end)
        starts += [e for e in alloc.events() if e.kind is EventKind.STARTED]
        if end.kind is EventKind.COMPLETED:
            break
        assert end.kind is EventKind.STOPPED, end
        assert end.checkpoint is not None and end.checkpoint.epoch == relay.epoch
        verify_checkpoint(relay.store, end.checkpoint)
    assert ends[-1].kind is EventKind.COMPLETED and ends[-1].step == total
    assert len(ends) >= 4, [e.step for e in ends]
    # Every segment after the first resumed from where the previous one stopped, via the
    # binary checkpoint (same platform).
    assert starts[0].resumed_from == "start" and starts[0].step == 0
    for previous, start in zip(ends, starts[1:], strict=False):
        assert start.resumed_from == "checkpoint"
        assert previous.checkpoint is not None and start.step == previous.checkpoint.step
    assert ends[-1].checkpoint is not None
    relayed = _final_state(relay.store, ends[-1].checkpoint, tmp_path / "relayed")
    assert _block(relayed, "Positions") == _block(reference, "Positions")
    assert _block(relayed, "Velocities") == _block(reference, "Velocities")
    assert relayed == reference
    # Each segment's outputs are kept under its own epoch, and together they tile the run.
    for epoch in range(1, relay.epoch + 1):
        keys = relay.store.list_keys(outputs_prefix(relay.job_id, epoch))
        assert any(k.endswith(".dcd") for k in keys), (epoch, keys)
    chunks = _state_data_chunks(relay)
    assert {c[0] for c in chunks} == set(range(1, relay.epoch + 1))
    _assert_contiguous(chunks, total)


def _freeze_when_caught_up(alloc: Allocation, job_id: str, epoch: int) -> None:
    """SIGSTOP the worker at a moment when everything it checkpointed is uploaded and
    announced and its heartbeat shows the step it reached: the state whose loss the test
    bounds. (Killed at any moment, the heartbeat may lag the newest checkpoint, or a
    checkpoint may still be waiting for its upload.) Retries until the frozen worker is in
    that state; waits on files only."""
    local = alloc.work_dir / f"{job_id}-{epoch}" / "checkpoints"

    def caught_up() -> bool:
        ckpts = _checkpoints_of(alloc.events(), epoch)
        beat = alloc.heartbeat()
        pending = list(local.iterdir()) if local.is_dir() else []
        return (
            len(ckpts) >= 2
            and not pending
            and beat is not None
            and beat.step is not None
            and beat.step >= max(e.step or 0 for e in ckpts)
        )

    while True:
        wait_for(caught_up, 60, "every checkpoint uploaded and the heartbeat caught up")
        alloc.kill(signal.SIGSTOP)
        if caught_up():
            return
        alloc.kill(signal.SIGCONT)


@pytest.mark.slow
def test_kill9_loses_at_most_one_checkpoint_interval(
    tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    total = 600
    relay = Relay(tmp_path, file_access, "job-kill")
    relay.upload_bundle(bundle_dir)
    alloc = relay.assigned(openmm_engine(total))
    alloc.start()
    _freeze_when_caught_up(alloc, relay.job_id, 1)
    alloc.kill(signal.SIGKILL)
    assert alloc.wait_exit() == -signal.SIGKILL
    last_beat = alloc.heartbeat()
    assert last_beat is not None and last_beat.epoch == 1
    relay.advance(alloc.events())
    assert relay.pointer is not None
    newest = list_checkpoints(relay.store, relay.job_id)[0]
    assert newest == relay.pointer  # every uploaded checkpoint was announced
    assert last_beat.step - relay.pointer.step <= CHECKPOINT_EVERY

    _, end = relay.run_segment(openmm_engine(total), None)
    assert end.kind is EventKind.COMPLETED and end.step == total
    started = [e for e in _all_events(tmp_path) if e.kind is EventKind.STARTED and e.epoch == 2]
    assert started[0].step == newest.step and started[0].resumed_from == "checkpoint"
    # Redone work = the killed segment's progress past its newest uploaded checkpoint.
    assert 0 <= last_beat.step - started[0].step <= CHECKPOINT_EVERY
    # The killed segment's outputs up to that checkpoint were uploaded with it: no gap. (A kill
    # between a chunk's upload and its checkpoint's leaves that one chunk as a visible overlap.)
    chunks = _state_data_chunks(relay)
    orphans = [c for c in chunks if c[0] == 1 and c[2] > newest.step]
    assert len(orphans) <= 1 and all(c[1] == newest.step for c in orphans), chunks
    _assert_contiguous([c for c in chunks if c not in orphans], total)


def _all_events(root: Path) -> list[WorkerEvent]:
    events: list[WorkerEvent] = []
    for folder in sorted((root / "alloc").iterdir()):
        events += read_events(folder / "events.jsonl", 0)[0]
    return events


@pytest.mark.slow
def test_sigterm_hands_off_with_a_verified_checkpoint(
    tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    relay = Relay(tmp_path, file_access, "job-term")
    relay.upload_bundle(bundle_dir)
    alloc = relay.assigned(openmm_engine(100_000))
    alloc.start()
    wait_for(lambda: _checkpoints_of(alloc.events(), 1), 60, "first checkpoint")
    alloc.kill(signal.SIGTERM)
    handoff = alloc.wait_event({EventKind.HANDOFF}, timeout=60)
    assert alloc.wait_exit(60) == 0
    assert "SIGTERM" in (handoff.reason or "")
    assert handoff.checkpoint is not None
    manifest = verify_checkpoint(relay.store, handoff.checkpoint)
    assert handoff.step is not None and manifest.step == handoff.step >= CHECKPOINT_EVERY
    assert manifest.platform == "Reference"
    assert {f.path for f in manifest.files} >= {"checkpoint.chk", "state.xml"}
    # The handoff checkpoint is the newest one and not a periodic one (step not a multiple).
    assert list_checkpoints(relay.store, relay.job_id)[0] == handoff.checkpoint
    beat = alloc.heartbeat()
    assert beat is not None and beat.handoff_margin_s is not None and beat.platform == "Reference"


@pytest.mark.slow
def test_corrupted_latest_checkpoint_falls_back_to_previous(
    tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    relay = Relay(tmp_path, file_access, "job-corrupt")
    relay.upload_bundle(bundle_dir)
    _, end = relay.run_segment(openmm_engine(100_000), stop_after_checkpoints=2)
    assert end.kind is EventKind.STOPPED
    latest, previous = relay.pointer, relay.fallbacks[0]
    assert latest is not None and previous.step < latest.step
    # Flip bytes of the latest checkpoint's state in the store.
    store_root = Path(file_access.url.removeprefix("file://"))
    victim = store_root / latest.prefix / "state.xml"
    victim.write_bytes(victim.read_bytes().replace(b"<Positions>", b"<Positions >", 1))

    alloc = relay.assigned(openmm_engine(100_000))
    alloc.start()
    fallback = alloc.wait_event({EventKind.CHECKPOINT_FALLBACK}, timeout=60)
    started = alloc.wait_event({EventKind.STARTED}, timeout=60)
    alloc.control(ControlAction.STOP, relay.job_id, relay.epoch)
    assert alloc.wait_event({EventKind.STOPPED}, timeout=60).checkpoint is not None
    assert alloc.wait_exit(60) == 0
    assert fallback.checkpoint == previous
    assert f"{latest.epoch}-{latest.seq}" in (fallback.reason or "")
    assert started.step == previous.step and started.checkpoint == previous


@pytest.mark.slow
def test_relay_through_moto_s3_keeps_secrets_out_of_logs(
    tmp_path: Path, moto_access: StorageAccess, bundle_dir: Path
) -> None:
    relay = Relay(tmp_path, moto_access, "job-s3")
    relay.upload_bundle(bundle_dir)
    first, end = relay.run_segment(openmm_engine(400), stop_after_checkpoints=1)
    assert end.kind is EventKind.STOPPED and end.checkpoint is not None
    second, end = relay.run_segment(openmm_engine(400), None)
    assert end.kind is EventKind.COMPLETED and end.step == 400
    assert relay.store.list_keys(outputs_prefix(relay.job_id, 2))
    for alloc in (first, second):
        assert SECRET_ACCESS_KEY not in alloc.log()
        assert "assignment_taken" in alloc.log()


@pytest.mark.slow
def test_deadline_minus_margin_triggers_a_planned_handoff(
    tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    """Tried with longer windows while the engine starts too late to prove anything (the
    worker then exits idle or hands off at step 0, both correct). A handoff at step 0 after
    an engine that started in time fails it."""
    import time

    for relay, window_s in deadline_windows(tmp_path, file_access, bundle_dir, (8, 30, 90)):
        alloc = relay.assigned(openmm_engine(100_000))
        deadline = time.time() + window_s
        alloc.start("--deadline", str(deadline))
        end = alloc.wait_event({EventKind.HANDOFF, EventKind.IDLE_EXIT}, timeout=window_s + 60)
        assert alloc.wait_exit() == 0
        started = [e for e in alloc.events() if e.kind is EventKind.STARTED]
        in_time = bool(started) and started[0].at.timestamp() < deadline - MARGIN_MAX_S - 2
        if end.kind is EventKind.HANDOFF and (in_time or end.step):
            break
        assert not in_time, f"the engine started in time, yet: {end}"
    else:
        pytest.fail("no engine started within 90 s of its worker")
    assert "allocation deadline" in (end.reason or "")
    assert end.checkpoint is not None and end.checkpoint.step > 0
    verify_checkpoint(relay.store, end.checkpoint)
    assert end.at.timestamp() >= deadline - MARGIN_MAX_S  # it simulated until then
    beat = alloc.heartbeat()
    assert beat is not None and beat.deadline is not None
    assert beat.handoff_margin_s is not None and 0.5 <= beat.handoff_margin_s <= MARGIN_MAX_S


def _started(alloc: Allocation) -> WorkerEvent:
    [started] = [e for e in alloc.events() if e.kind is EventKind.STARTED]
    return started


@pytest.mark.slow
def test_another_platform_resumes_from_the_portable_state_xml(
    tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    relay = Relay(tmp_path, file_access, "job-platform")
    relay.upload_bundle(bundle_dir)
    _, end = relay.run_segment(openmm_engine(400), 1)  # Reference; stops well before the end
    assert end.kind is EventKind.STOPPED and end.checkpoint is not None
    stopped_at = end.checkpoint
    second, end = relay.run_segment(openmm_engine(400), None, "--platform", "CPU")
    assert end.kind is EventKind.COMPLETED and end.step == 400
    # OpenMM's binary checkpoint only loads on the platform that wrote it: the worker says
    # it used the State XML instead, and continues from the same step.
    started = _started(second)
    assert started.resumed_from == "state_xml" and started.step == stopped_at.step
    assert end.checkpoint is not None
    assert verify_checkpoint(relay.store, end.checkpoint).platform == "CPU"


@pytest.mark.slow
def test_pdb_and_force_field_inputs_relay(
    tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    engine: dict[str, object] = {
        "kind": "openmm",
        "pdb": "topology.pdb",
        "forcefields": ["amber14/tip3pfb.xml"],
        "cutoff_nm": 0.6,  # the test box is 1.3 nm wide
        "total_steps": 400,  # long enough that the stop lands well before the end
        "checkpoint_every_steps": CHECKPOINT_EVERY,
        "report_every_steps": 10,
    }
    relay = Relay(tmp_path, file_access, "job-pdb")
    relay.upload_bundle(bundle_dir)
    first, end = relay.run_segment(engine, 1)
    assert end.kind is EventKind.STOPPED and end.checkpoint is not None
    assert _started(first).resumed_from == "start"
    second, end = relay.run_segment(engine, None)
    assert end.kind is EventKind.COMPLETED and end.step == 400
    assert _started(second).resumed_from == "checkpoint"
