"""SLURM's walltime warning (SIGUSR1, up to 60 s early) versus a real stop (SIGTERM).

Real worker processes, real OpenMM (Reference), real signals. The verdicts come from the
worker's files: event timestamps and steps, the heartbeat's deadline, the checkpoints' steps.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relaymd.mailbox.models import EventKind, WorkerEvent
from relaymd.models import StorageAccess
from relaymd.storage.checkpoints import verify_checkpoint
from tests.worker.worker_harness import (
    MARGIN_MAX_S,
    Allocation,
    Relay,
    deadline_windows,
    wait_for,
)

pytestmark = pytest.mark.slow


def _engine() -> dict[str, object]:
    return {
        "kind": "openmm",
        "total_steps": 10_000_000,
        "checkpoint_every_steps": 500,
        "report_every_steps": 10,
        "topology": "topology.pdb",
    }


def _checkpoints_after(alloc: Allocation, t: float) -> list[WorkerEvent]:
    return [e for e in alloc.events() if e.kind is EventKind.CHECKPOINT and e.at.timestamp() > t]


def _started_segment(relay: Relay, *worker_args: str) -> Allocation:
    alloc = relay.assigned(_engine())
    alloc.start(*worker_args)
    alloc.wait_event({EventKind.STARTED}, timeout=120)
    return alloc


@pytest.fixture
def relay(tmp_path: Path, file_access: StorageAccess, bundle_dir: Path) -> Relay:
    r = Relay(tmp_path, file_access, "job-deadline")
    r.upload_bundle(bundle_dir)
    return r


def test_early_walltime_warning_keeps_simulating_until_deadline_minus_margin(
    tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    """Tried with longer windows while the engine's first step comes less than `lead` + 5 s
    before the deadline: no *early* warning can be sent then."""
    for relay, window_s in deadline_windows(tmp_path, file_access, bundle_dir, (40, 90, 180)):
        deadline = time.time() + window_s
        alloc = relay.assigned(_engine())
        alloc.start("--deadline", str(deadline), "--warning-lead", "20")
        first = alloc.wait_event({EventKind.STARTED, EventKind.HANDOFF, EventKind.IDLE_EXIT}, 240)
        if first.kind is EventKind.STARTED and deadline - time.time() >= 25:
            break
        alloc.kill(signal.SIGTERM)
        alloc.wait_exit(60)
    else:
        pytest.fail("no engine reached its first step 25 s before its deadline in three tries")
    # SLURM's tick: the warning arrives long before `deadline - lead` (here >= 25 s before the end).
    warned = time.time()
    alloc.kill(signal.SIGUSR1)
    handoff = alloc.wait_event({EventKind.HANDOFF}, timeout=180)
    assert alloc.wait_exit(60) == 0
    assert "allocation deadline" in (handoff.reason or ""), handoff.reason
    # It kept simulating and checkpointing after the warning, up to deadline - margin.
    assert handoff.at.timestamp() >= deadline - MARGIN_MAX_S
    later = _checkpoints_after(alloc, warned)
    assert len(later) >= 2
    assert handoff.checkpoint is not None and handoff.step is not None
    assert handoff.checkpoint.step == handoff.step > later[0].step
    verify_checkpoint(relay.store, handoff.checkpoint)
    # The known deadline was consistent with the warning: the heartbeat still reports it.
    beat = alloc.heartbeat()
    assert beat is not None and beat.deadline is not None
    assert abs(beat.deadline.timestamp() - deadline) < 0.01


def test_walltime_warning_without_a_deadline_sets_the_earliest_possible_end(
    relay: Relay,
) -> None:
    alloc = _started_segment(relay, "--warning-lead", "12")
    before = time.time()
    alloc.kill(signal.SIGUSR1)
    after = time.time()
    handoff = alloc.wait_event({EventKind.HANDOFF}, timeout=180)
    assert alloc.wait_exit(60) == 0
    assert "allocation deadline" in (handoff.reason or ""), handoff.reason
    # The end is at least `lead` after the warning: the worker simulated until then - margin.
    assert handoff.at.timestamp() >= before + 12 - MARGIN_MAX_S
    assert len(_checkpoints_after(alloc, after)) >= 2
    beat = alloc.heartbeat()
    assert beat is not None and beat.deadline is not None
    # It reports that end (noticed after the signal was sent) and handed off by it - margin.
    assert before + 12 <= beat.deadline.timestamp() <= handoff.at.timestamp() + MARGIN_MAX_S


def test_sigterm_after_the_warning_stops_at_once(relay: Relay) -> None:
    deadline = time.time() + 900
    alloc = _started_segment(relay, "--deadline", str(deadline), "--warning-lead", "20")
    warned = time.time()
    alloc.kill(signal.SIGUSR1)
    # Still running after the warning: checkpoints keep coming.
    wait_for(lambda: _checkpoints_after(alloc, warned), 60, "a checkpoint after the warning")
    alloc.kill(signal.SIGTERM)
    handoff = alloc.wait_event({EventKind.HANDOFF}, timeout=60)
    assert alloc.wait_exit(60) == 0
    assert "SIGTERM" in (handoff.reason or ""), handoff.reason
    assert handoff.at < datetime.fromtimestamp(deadline - 600, UTC)
    assert handoff.checkpoint is not None
    verify_checkpoint(relay.store, handoff.checkpoint)
