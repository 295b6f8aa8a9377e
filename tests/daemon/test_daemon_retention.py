from pathlib import Path

from relaymd.daemon.retention import advance_pointer, apply_retention
from relaymd.mailbox.daemon_files import assignment_file
from relaymd.mailbox.models import Assignment
from relaymd.models import Allocation, CheckpointRef, Job, StorageAccess
from relaymd.storage import open_store
from relaymd.storage.base import ObjectStore
from relaymd.storage.checkpoints import list_checkpoints, upload_checkpoint
from tests.daemon.daemon_factories import make_alloc, make_job


def _upload(store: ObjectStore, payload: Path, epoch: int, seq: int) -> CheckpointRef:
    return upload_checkpoint(
        store,
        job_id="j1",
        epoch=epoch,
        seq=seq,
        step=epoch * 10 + seq,
        files=[("state.xml", payload)],
        engine="openmm",
    )


def test_pointer_and_fallbacks_survive_and_reach_the_assignment(tmp_path: Path) -> None:
    store = open_store(StorageAccess(url=(tmp_path / "s").as_uri()))
    payload = tmp_path / "state.xml"
    payload.write_text("<State/>")
    job: Job = make_job("j1", epoch=2)
    # The verified chain the daemon saw, in order; each one moves the pointer.
    for epoch, seq in [(1, 1), (1, 2), (2, 1), (2, 2)]:
        job = advance_pointer(job, _upload(store, payload, epoch, seq), keep=3)
    _upload(store, payload, 1, 3)  # a fenced epoch-1 writer's late checkpoint: never verified
    _upload(store, payload, 3, 1)  # newer than the pointer: not verified yet

    assert job.checkpoint is not None and (job.checkpoint.epoch, job.checkpoint.seq) == (2, 2)
    assert [(r.epoch, r.seq) for r in job.fallbacks] == [(2, 1), (1, 2)]

    deleted = apply_retention(store, job)
    assert sorted((r.epoch, r.seq) for r in deleted) == [(1, 1), (1, 3)]
    left = sorted((r.epoch, r.seq) for r in list_checkpoints(store, "j1"))
    assert left == [(1, 2), (2, 1), (2, 2), (3, 1)]

    # The worker's next assignment names the fallbacks it may resume from.
    alloc: Allocation = make_alloc("a1", job_id=job.id)
    assignment = Assignment.model_validate_json(assignment_file(alloc, job).data)
    assert assignment.resume == job.checkpoint
    assert [(r.epoch, r.seq) for r in assignment.fallbacks] == [(2, 1), (1, 2)]


def test_keep_one_keeps_only_the_pointer(tmp_path: Path) -> None:
    store = open_store(StorageAccess(url=(tmp_path / "s").as_uri()))
    payload = tmp_path / "state.xml"
    payload.write_text("<State/>")
    job: Job = make_job("j1")
    for seq in (1, 2, 3):
        job = advance_pointer(job, _upload(store, payload, 1, seq), keep=1)
    assert job.fallbacks == []
    assert sorted(r.seq for r in apply_retention(store, job)) == [1, 2]
    assert [r.seq for r in list_checkpoints(store, "j1")] == [3]
