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
from relaymd.mailbox.models import Heartbeat
from relaymd.models import AllocationState, JobState, SegmentOutcome
from tests.daemon.daemon_e2e_support import (
    kill9,
    local_config,
    start_daemon,
    stop_daemon,
    wait_for,
    write_spec,
    write_tiny_system,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


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
    rate = write_tiny_system(job_dir)
    # About two and a half segments of compute, whatever this machine's speed.
    steps = max(300, int(rate * walltime_s * 1.6) // 100 * 100)
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

        # 3. Kill the worker once the job has a verified checkpoint.
        running = wait_for(
            "first checkpoint",
            lambda: (
                (j := state.get_job(job.id)) and j.checkpoint is not None and j.allocation_id and j
            ),
            90,
            root,
        )
        beat = wait_for("heartbeat", lambda: _heartbeat(scratch, running.allocation_id), 30, root)
        assert beat.job_id == job.id and beat.pid > 0
        os.kill(beat.pid, signal.SIGKILL)
        wait_for(
            "resume after the worker kill",
            lambda: (
                (j := state.get_job(job.id))
                and j.epoch > running.epoch
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
