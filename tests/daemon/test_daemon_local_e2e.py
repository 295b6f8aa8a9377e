"""End to end on this machine: local transport, direct scheduler, file:// storage, real
`relaymd-worker` processes running a real (tiny) OpenMM job, a real daemon process.

One daemon run proves several things, to keep the suite affordable:
* the daemon killed with SIGKILL right after the write that ran the submit, restarted: the
  allocation is adopted by name, never submitted twice (invariant 4);
* a worker killed with SIGKILL: the job is requeued and resumes from its checkpoint;
* the daemon killed with SIGKILL at an arbitrary moment, restarted: nothing is lost;
* the job relays across several segments to completion, each segment in the history.
"""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import pytest

from relaymd.config import load_config
from relaymd.daemon.decide.warm import handoff_due_at
from relaymd.mailbox.models import Heartbeat, WorkerState
from relaymd.models import AllocationState, JobState, SegmentOutcome
from relaymd.models.base import utcnow
from tests.daemon.daemon_e2e_support import (
    kill9,
    local_config,
    start_daemon,
    stop_daemon,
    wait_for,
    write_spec,
    write_tiny_system,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _heartbeat(scratch: Path, alloc_id: str) -> Heartbeat | None:
    try:
        return Heartbeat.model_validate_json(
            (scratch / "alloc" / alloc_id / "heartbeat.json").read_text()
        )
    except (OSError, ValueError):
        return None


def test_local_relay_survives_kill9_of_daemon_and_worker(tmp_path: Path, monkeypatch) -> None:
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.state import StateStore
    from relaymd.storage import open_store
    from relaymd.submission.submit import submit_directory

    root = tmp_path
    monkeypatch.setenv("RELAYMD_STATE_DIR", str(root / "state"))
    monkeypatch.setenv("RELAYMD_DATA_DIR", str(root / "data"))
    walltime_s = 14.0
    config_path = local_config(root, walltime_s=walltime_s)
    monkeypatch.setenv("RELAYMD_CONFIG", str(config_path))
    loaded = load_config(config_path)
    scratch = Path(loaded.clusters[0].scratch)

    job_dir = root / "job"
    # Timed over a few seconds: a short sample on a busy machine can be off several-fold.
    rate = write_tiny_system(job_dir, timing_steps=300)
    # About four segments of compute at the sampled speed: the kill below waits for a handoff
    # first, so the job must outlast a segment and a half even if the worker runs ~3x faster
    # than the sample did (measured on a loaded 2-core machine).
    steps = max(600, int(rate * walltime_s * 3) // 100 * 100)
    write_spec(job_dir, "e2e relay", steps)
    store = open_store(storage_access(loaded.config, make_secrets_provider(loaded.config.secrets)))
    state = StateStore.open(Path(loaded.config.state_path))
    job = submit_directory(job_dir, loaded=loaded, store=store, state=state)

    # 1. Crash right after the write that ran the submit, before its result is recorded.
    daemon = start_daemon(root, config_path, fault="after_submit_write")
    assert daemon.wait(timeout=60) == -signal.SIGKILL
    [first] = state.list_allocations()
    assert first.state is AllocationState.SUBMITTING and first.scheduler_id is None
    assert (scratch / "alloc" / first.id / "job.sh").is_file()

    # 2. Restart: the allocation is adopted by its name, not submitted again.
    daemon = start_daemon(root, config_path)
    try:
        adopted = wait_for(
            "adoption",
            lambda: (a := state.get_allocation(first.id)) and a.scheduler_id and a,
            60,
            root,
        )
        assert adopted.state in (AllocationState.PENDING, AllocationState.RUNNING)
        assert "allocation_adopted" in [e.kind for e in state.list_events(limit=200)]

        # 3. Once a segment has handed off at its deadline, kill the worker of a later one while
        #    it runs the job's current epoch from a verified checkpoint, with time to spare
        #    before its own handoff (a kill during a handoff would test something else).
        def killable() -> tuple[int, Heartbeat] | None:
            j = state.get_job(job.id)
            if j is None or j.allocation_id is None or j.checkpoint is None:
                return None
            handed_off = any(
                s.outcome is SegmentOutcome.HANDOFF for s in state.list_segments(job.id)
            )
            beat = _heartbeat(scratch, j.allocation_id)
            if not handed_off or j.checkpoint.epoch != j.epoch or beat is None:
                return None
            if (beat.job_id, beat.epoch, beat.state) != (j.id, j.epoch, WorkerState.RUNNING):
                return None
            due = handoff_due_at(beat)
            left_s = (due - utcnow()).total_seconds() if due else 0.0
            return (j.epoch, beat) if left_s >= 2 and beat.pid > 0 else None

        killed_epoch, beat = wait_for("a worker to kill after a handoff", killable, 180, root)
        os.kill(beat.pid, signal.SIGKILL)
        wait_for(
            "resume after the worker kill",
            lambda: (
                (j := state.get_job(job.id))
                and j.epoch > killed_epoch
                and j.state is JobState.RUNNING
            ),
            90,
            root,
        )

        # 4. Kill the daemon at an arbitrary moment and restart it.
        kill9(daemon)
        daemon = start_daemon(root, config_path)
        final = wait_for(
            "completion",
            lambda: (j := state.get_job(job.id)) and j.state.is_final and j,
            240,
            root,
        )
    finally:
        stop_daemon(daemon)

    assert final.state is JobState.COMPLETED, final.failure_reason
    segments = state.list_segments(job.id)
    outcomes = [s.outcome for s in segments]
    assert len(segments) >= 3, outcomes
    assert outcomes[-1] is SegmentOutcome.COMPLETED
    assert SegmentOutcome.HANDOFF in outcomes  # relayed at an allocation deadline
    assert SegmentOutcome.LOST in outcomes or SegmentOutcome.FAILED in outcomes  # the kill
    epochs = [s.epoch for s in segments]
    assert epochs == sorted(set(epochs))
    # Each segment resumed where a verified checkpoint left off, never ahead of it.
    for before, after in itertools.pairwise(segments):
        assert after.start_step <= (before.end_step or 0)
    assert final.step == steps

    # No duplicate submission: every allocation folder on scratch is one row in the store,
    # and the crashed submit was adopted rather than submitted again.
    rows = {a.id for a in state.list_allocations()}
    folders = {p.name for p in (scratch / "alloc").iterdir()}
    assert folders <= rows
    assert (
        sum(
            e.kind == "allocation_submitted" and e.allocation_id == first.id
            for e in state.list_events(limit=500)
        )
        == 0
    )
    state.close()
