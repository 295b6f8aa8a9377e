"""A `salad` cluster end to end (ADR 0025): a real daemon provisions a container group on the
SaladCloud stand-in, whose replicas are real `relaymd-worker --mailbox file://...` processes
with private folders (no shared filesystem). They join through the bucket and run a tiny real
OpenMM job with periodic checkpoints. Replicas are SIGKILLed (the stand-in drops them from its
instance list and starts another on a new machine), the daemon is SIGKILLed and restarted.
`stale_after_s` is an hour in these runs, so a job can only move on from a vanished replica
through the instance-list cross-check. Verdicts come from the bucket (events, checkpoints, the
assembled outputs) and from the stand-in's own record of replicas, not from the daemon's state."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relaymd.assemble import assemble_outputs
from relaymd.mailbox.models import EventKind, WorkerEvent
from relaymd.storage.checkpoints import verify_checkpoint
from tests.support.salad_run import (
    GROUP,
    IMAGE,
    KEY,
    RunSettings,
    SaladRun,
    events,
    salad_mailboxes,
    salad_run,
    with_kind,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(500)]
STEPS = 4000
REPORT_EVERY = 100  # write_spec's state-data interval
FAST = RunSettings(
    steps=STEPS,
    # Only the instance list can end a vanished replica within a test's bounds.
    daemon={"stale_after_s": 3600, "stop_grace_s": 4, "min_segment_s": 2},
    cluster={"poll": {"min_interval_s": 0.5, "max_interval_s": 1.0}},
    salad={
        "mailbox_poll_s": 0.5,
        "worker_args": ["--heartbeat-interval", "1", "--idle-timeout", "60",
                        "--platform", "Reference", "--margin-min", "1", "--margin-max", "2"],
    },
)  # fmt: skip


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SaladRun]:
    with salad_run(tmp_path, FAST, monkeypatch.setenv) as run:
        yield run


def _assembled_steps(run: SaladRun) -> list[int]:
    """The state-data steps of the job's outputs in the bucket, assembled as a user would."""
    copy = run.root / "download"
    shutil.copytree(run.bucket / "jobs" / run.job.id / "outputs", copy / "outputs")
    assembled = assemble_outputs(copy)
    assert assembled.state_data is not None
    rows = assembled.state_data.read_text().splitlines()[1:]
    return [int(row.split(",")[0]) for row in rows]


def _assert_done_once(run: SaladRun, end: WorkerEvent) -> None:
    assert end.job_id == run.job.id and end.step == STEPS and end.checkpoint is not None
    verify_checkpoint(run.store, end.checkpoint)
    assert len(run.mine(EventKind.COMPLETED)) == 1
    assert _assembled_steps(run) == list(range(REPORT_EVERY, STEPS + 1, REPORT_EVERY))
    assert KEY not in (run.root / "daemon.log").read_text()
    job_now = run.state.get_job(run.job.id)
    assert job_now is not None and job_now.retries == 0  # a vanished replica costs no retry


def test_a_job_relays_across_interrupted_salad_replicas(run: SaladRun) -> None:
    kill_at = random.Random(11).randint(1, 3)  # the checkpoint after which the replica dies
    run.wait(f"checkpoint {kill_at} on a Salad replica", lambda: run.checkpoints() >= kill_at)
    killed_box = with_kind(run.bucket, EventKind.CHECKPOINT)[-1][0]
    killed_at = datetime.now(UTC)
    assert run.standin.kill_one(GROUP) is not None
    end = run.finish()
    newest = max(e.step or 0 for e in events(killed_box) if e.kind is EventKind.CHECKPOINT)
    resumed = [e for m, e in run.mine(EventKind.STARTED) if m != killed_box]
    assert resumed and resumed[0].resumed_from == "checkpoint"
    # The stand-in's instance list, not the hour-long stale_after_s, ended the killed replica.
    print(f"salad_failover_s={(resumed[0].at - killed_at).total_seconds():.1f}")
    assert 0 < (resumed[0].step or 0) <= newest  # lost work: at most since the last checkpoint
    _assert_done_once(run, end)
    group = run.standin.groups[GROUP]
    assert group.killed == 1 and group.started >= 2
    assert group.body["container"]["image"] == IMAGE
    assert any(path.endswith(f"/containers/{GROUP}/instances") for _, path in run.standin.requests)


def test_salad_workers_run_on_while_the_daemon_is_down(run: SaladRun) -> None:
    """The daemon is SIGKILLed mid-segment and restarted: the replica keeps checkpointing to
    the bucket meanwhile, the new daemon takes the group and the allocation as they are, and
    the job completes once, on the one replica, with no step run twice."""
    run.checkpoints_with_the_daemon_down(2)
    run.start_daemon()
    end = run.finish()
    assert len(run.mine(EventKind.STARTED)) == 1  # one segment: nothing ran twice
    _assert_done_once(run, end)
    group = run.standin.groups[GROUP]
    assert group.killed == 0 and group.started == 1


def test_a_replica_interrupted_while_the_daemon_is_down_is_taken_over_after(
    run: SaladRun,
) -> None:
    """With the daemon down, a replica checkpoints, is SIGKILLed, and SaladCloud's restart
    policy starts another, which announces itself in the bucket and waits. The restarted
    daemon reads the checkpoints it missed, ends the vanished replica from the instance list,
    and the new one resumes from the newest of them: nothing lost, nothing run twice."""
    run.checkpoints_with_the_daemon_down(1)
    killed_box = with_kind(run.bucket, EventKind.CHECKPOINT)[-1][0]
    assert run.standin.kill_one(GROUP) is not None
    run.wait(
        "the next replica announced in the bucket",
        lambda: any(m != killed_box for m in salad_mailboxes(run.bucket)),
    )
    run.start_daemon()
    end = run.finish()
    written = [e for e in events(killed_box) if e.kind is EventKind.CHECKPOINT]
    resumed = [e for m, e in run.mine(EventKind.STARTED) if m != killed_box]
    assert len(resumed) == 1 and resumed[0].resumed_from == "checkpoint"
    assert resumed[0].step == max(e.step or 0 for e in written)  # the outage's checkpoint kept
    _assert_done_once(run, end)
