"""A pre-written successor assignment (ADR 0009), played against real worker processes.

The test plays the daemon: it writes a gated assignment for epoch N+1 and real workers run
epochs N and N+1 on a real (tiny) OpenMM job with file:// storage. Verdicts come from the
workers' events and the checkpoints in storage.
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relaymd.mailbox.models import (
    ControlAction,
    EventKind,
    HandoffGate,
    WorkerEvent,
    WorkerState,
)
from relaymd.models import (
    HandoffMarker,
    StorageAccess,
)
from relaymd.storage.keys import handoff_key
from tests.worker.worker_harness import Allocation, Relay, wait_for

pytestmark = pytest.mark.slow


def _engine(total: int) -> dict[str, object]:
    return {
        "kind": "openmm",
        "total_steps": total,
        "report_every_steps": 20,
        "checkpoint_every_steps": 20,
        "platform": "Reference",
    }


def _gated(relay: Relay, alloc: Allocation, after_epoch: int, expires_in_s: float = 300.0):
    """The assignment of epoch after_epoch + 1, pre-written: no resume point of its own."""
    return relay.assignment(
        alloc,
        _engine(100_000),
        resume=None,
        fallbacks=[],
        after_handoff=HandoffGate(
            job_id=relay.job_id,
            after_epoch=after_epoch,
            expires_at=datetime.now(UTC) + timedelta(seconds=expires_in_s),
        ),
    )


def _log_has(alloc: Allocation, text: str) -> bool:
    return text in alloc.log()


def _hand_off_after_a_checkpoint(alloc: Allocation, epoch: int) -> WorkerEvent:
    """Start the worker with no deadline; once it has checkpointed, send SLURM's walltime
    warning (SIGUSR1) with a 1 s lead: the deadline is then due and it hands off. Waits on the
    worker's events, not on a clock that a busy machine can outrun."""
    alloc.start("--warning-lead", "1")
    alloc.wait_event({EventKind.CHECKPOINT}, timeout=120, epoch=epoch)
    alloc.kill(signal.SIGUSR1)
    return alloc.wait_event({EventKind.HANDOFF}, timeout=120, epoch=epoch)


def test_gated_successor_starts_only_from_its_predecessors_handoff_checkpoint(
    tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    relay = Relay(tmp_path, file_access, "job-gate")
    relay.upload_bundle(bundle_dir)

    # Epoch 1 hands off: an older epoch's marker and checkpoints now exist.
    first = relay.allocation()
    first.assign(relay.assignment(first, _engine(100_000)))
    first_handoff = _hand_off_after_a_checkpoint(first, epoch=1)
    assert first.wait_exit() == 0
    relay.advance(first.events())
    assert relay.store.exists(handoff_key(relay.job_id, 1))

    # Epoch 2 is assigned to `second`; epoch 3 is pre-written to `third`, after epoch 2.
    second = relay.allocation()
    second_assignment = relay.assignment(second, _engine(100_000))
    third = relay.allocation()
    third.assign(_gated(relay, third, after_epoch=2))
    assert relay.epoch == 3
    third.start(idle_timeout=300)

    def waiting() -> bool:
        beat = third.heartbeat()
        return bool(
            beat
            and beat.state is WorkerState.PREPARING
            and beat.awaiting_handoff_of == 2
            and beat.job_id == relay.job_id
            and beat.epoch == 3
        )

    wait_for(waiting, 60, "the successor waiting on epoch 2's handoff")
    # A marker at epoch 2's key that names epoch 1's handoff checkpoint: never resumed from.
    assert first_handoff.checkpoint is not None
    forged = HandoffMarker(job_id=relay.job_id, epoch=2, checkpoint=first_handoff.checkpoint)
    relay.store.put_bytes(handoff_key(relay.job_id, 2), forged.model_dump_json().encode())
    wait_for(lambda: _log_has(third, "handoff_marker_rejected"), 60, "the forged marker rejected")
    assert not [e for e in third.events() if e.kind is EventKind.STARTED]

    # Epoch 2 runs and hands off: its marker replaces the forged one; `third` starts from it.
    second.assign(second_assignment)
    handoff = _hand_off_after_a_checkpoint(second, epoch=2)
    assert second.wait_exit() == 0
    started = third.wait_event({EventKind.STARTED}, timeout=90, epoch=3)
    assert handoff.checkpoint is not None and handoff.checkpoint.epoch == 2
    assert started.checkpoint == handoff.checkpoint
    assert started.resumed_from == "checkpoint" and started.step == handoff.checkpoint.step
    gap = (started.at - handoff.at).total_seconds()
    print(f"successor gap after the handoff event: {gap:.2f}s")
    third.control(ControlAction.STOP, relay.job_id, 3)
    stopped = third.wait_event({EventKind.STOPPED}, timeout=60, epoch=3)
    assert third.wait_exit() == 0
    # Epoch 3's own checkpoint continues from epoch 2's handoff step.
    assert stopped.checkpoint is not None and stopped.checkpoint.epoch == 3
    assert stopped.checkpoint.step >= handoff.checkpoint.step


def test_withdrawn_or_expired_gate_returns_the_worker_to_idle(
    tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    relay = Relay(tmp_path, file_access, "job-withdrawn")
    relay.upload_bundle(bundle_dir)
    relay.epoch = 4  # epochs 1-4 ran elsewhere; epoch 4 is still running
    alloc = relay.allocation()
    alloc.assign(_gated(relay, alloc, after_epoch=4))
    alloc.start(idle_timeout=300)

    def beat_is(state: WorkerState, awaiting: int | None) -> bool:
        beat = alloc.heartbeat()
        return bool(beat and beat.state is state and beat.awaiting_handoff_of == awaiting)

    wait_for(lambda: beat_is(WorkerState.PREPARING, 4), 60, "waiting on epoch 4")
    (alloc.dir / "assignment.json").unlink()  # the daemon withdraws it
    wait_for(lambda: beat_is(WorkerState.IDLE, None), 60, "back to idle after the withdrawal")

    # A gate that expires (daemon offline, no handoff came): dropped, never run.
    alloc.assign(_gated(relay, alloc, after_epoch=5, expires_in_s=3))
    wait_for(lambda: _log_has(alloc, "handoff_gate_expired"), 60, "the gate expired")
    wait_for(lambda: beat_is(WorkerState.IDLE, None), 60, "idle after the expiry")
    alloc.control(ControlAction.STOP, None, None)
    idle_exit = alloc.wait_event({EventKind.IDLE_EXIT}, timeout=60)
    assert alloc.wait_exit() == 0
    assert "stop requested" in (idle_exit.reason or "")
    assert not [e for e in alloc.events() if e.kind is EventKind.STARTED]
    assert not relay.store.list_keys(f"jobs/{relay.job_id}/checkpoints/")
