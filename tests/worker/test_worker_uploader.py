"""The background uploader during a storage outage: checkpoints may be skipped, outputs not."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from relaymd.models import CheckpointRef, ObjectRef
from relaymd.storage.base import ProgressCallback, StorageError
from relaymd.storage.checkpoints import OutputsWriter, list_checkpoints
from relaymd.storage.file import FileStore
from worker_entry.engines.base import PendingCheckpoint
from worker_entry.uploader import CheckpointUploader


class OutageStore(FileStore):
    """A file store that refuses every write until `restore()`."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.up = threading.Event()
        self.refused = threading.Event()

    def put_file(self, key: str, path: Path, progress: ProgressCallback | None = None) -> ObjectRef:
        if not self.up.is_set():
            self.refused.set()
            raise StorageError(f"503 Service Unavailable for {key}")
        return super().put_file(key, path, progress)


def _pending(root: Path, seq: int, step: int, chunk: str) -> PendingCheckpoint:
    local = root / f"ckpt{seq}"
    (local / "outputs").mkdir(parents=True)
    (local / "state.xml").write_text(f"<State step='{step}'/>")
    out = local / "outputs" / chunk
    out.write_text(f"rows up to {step}\n")
    return PendingCheckpoint(
        seq=seq,
        step=step,
        files=[("state.xml", local / "state.xml")],
        local_dir=local,
        outputs=[(chunk, out)],
    )


def _start_uploader(
    store: FileStore, epoch: int, uploaded: list[CheckpointRef]
) -> CheckpointUploader:
    uploader = CheckpointUploader(
        store,
        job_id="j1",
        epoch=epoch,
        engine="openmm",
        outputs=OutputsWriter(store, job_id="j1", epoch=epoch),
        on_uploaded=lambda r, _: uploaded.append(r),
    )
    uploader.start()
    return uploader


def test_a_superseded_checkpoint_hands_its_outputs_on(tmp_path: Path) -> None:
    store = OutageStore(tmp_path / "store")
    uploaded: list[CheckpointRef] = []
    uploader = _start_uploader(store, 3, uploaded)
    try:
        uploader.submit(_pending(tmp_path, 1, 10, "state_data.0000000000-0000000010.csv"))
        assert store.refused.wait(10)
        uploader.submit(_pending(tmp_path, 2, 20, "state_data.0000000010-0000000020.csv"))
        deadline = time.monotonic() + 10
        while (tmp_path / "ckpt1").exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # the retry after the wake-up fails again and drops checkpoint 1
        assert not (tmp_path / "ckpt1").exists()
        store.up.set()
        assert uploader.wait_idle(30)
    finally:
        uploader.close()

    # Only the newest checkpoint made it (the older one was dropped while storage was down)...
    assert [(r.epoch, r.seq) for r in uploaded] == [(3, 2)]
    assert [(r.epoch, r.seq) for r in list_checkpoints(store, "j1")] == [(3, 2)]
    # ...but both output chunks did, so the trajectory has no gap.
    outputs = sorted(store.list_keys("jobs/j1/outputs/3/"))
    assert outputs == [
        "jobs/j1/outputs/3/manifest.json",
        "jobs/j1/outputs/3/state_data.0000000000-0000000010.csv",
        "jobs/j1/outputs/3/state_data.0000000010-0000000020.csv",
    ]
    assert not (tmp_path / "ckpt1").exists() and not (tmp_path / "ckpt2").exists()


class FlakyCheckpointStore(FileStore):
    """Stores outputs at once; refuses the first `failures` checkpoint writes."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures
        self.puts: list[str] = []

    def put_file(self, key: str, path: Path, progress: ProgressCallback | None = None) -> ObjectRef:
        self.puts.append(key)
        if "/checkpoints/" in key and self.failures > 0:
            self.failures -= 1
            raise StorageError(f"503 Service Unavailable for {key}")
        return super().put_file(key, path, progress)


def test_a_retried_checkpoint_does_not_upload_its_outputs_again(tmp_path: Path) -> None:
    store = FlakyCheckpointStore(tmp_path / "store", failures=2)
    uploaded: list[CheckpointRef] = []
    uploader = _start_uploader(store, 1, uploaded)
    try:
        uploader.submit(_pending(tmp_path, 1, 10, "trajectory.0000000000-0000000010.dcd"))
        assert uploader.wait_idle(30)
    finally:
        uploader.close()

    assert [(r.epoch, r.seq) for r in uploaded] == [(1, 1)]
    chunk = "jobs/j1/outputs/1/trajectory.0000000000-0000000010.dcd"
    assert store.puts.count(chunk) == 1  # two failed checkpoint tries, one output upload
    assert sum("/checkpoints/" in k for k in store.puts) >= 3
