"""Checkpoint uploads in a background thread, so the engine never waits on the network.

Local files stay until their upload is verified; a storage outage is retried with backoff.
When a newer checkpoint is waiting, an older one that keeps failing is dropped: only the
newest matters for resuming, and dropping it bounds local disk use during an outage.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from relaymd.models import CheckpointRef
from relaymd.storage.base import ObjectStore
from relaymd.storage.checkpoints import CheckpointExists, OutputsWriter, upload_checkpoint
from worker_entry.engines.base import PendingCheckpoint
from worker_entry.logging import get_logger

log = get_logger(__name__)

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 60.0


# Called with the verified ref and the seconds from "engine starts writing" to "verified".
UploadedCallback = Callable[[CheckpointRef, float], None]


class CheckpointUploader(threading.Thread):
    def __init__(
        self,
        store: ObjectStore,
        *,
        job_id: str,
        epoch: int,
        engine: str,
        outputs: OutputsWriter,
        on_uploaded: UploadedCallback,
    ) -> None:
        super().__init__(name=f"upload-{job_id}-{epoch}", daemon=True)
        self._store = store
        self._job_id = job_id
        self._epoch = epoch
        self._engine = engine
        self.outputs = outputs
        self._on_uploaded = on_uploaded
        self._cond = threading.Condition()
        self._queue: list[PendingCheckpoint] = []
        self._busy = False
        self._closed = False
        self._wake = threading.Event()
        self.last_ref: CheckpointRef | None = None
        self.last_error: str | None = None
        self.uploaded = 0

    def submit(self, pending: PendingCheckpoint) -> None:
        with self._cond:
            self._queue.append(pending)
            self._cond.notify_all()
        self._wake.set()

    def wait_idle(self, timeout_s: float | None) -> bool:
        """True once every submitted checkpoint is uploaded (or superseded)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(timeout=left if left is not None else 1.0)
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._wake.set()
        self.join(timeout=30)

    def _next(self) -> PendingCheckpoint | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            self._busy = True
            return self._queue[0]

    def _done(self, pending: PendingCheckpoint) -> None:
        shutil.rmtree(pending.local_dir, ignore_errors=True)
        with self._cond:
            if self._queue and self._queue[0] is pending:
                self._queue.pop(0)
            self._busy = False
            self._cond.notify_all()

    def _supersede(self, pending: PendingCheckpoint) -> bool:
        """Drop `pending` for a newer queued checkpoint, handing its output chunk on to that
        one: a checkpoint may be skipped, a stretch of trajectory may not."""
        with self._cond:
            if len(self._queue) < 2:
                return False
            successor = self._queue[1]
            carried = []
            for name, path in pending.outputs:
                target = successor.local_dir / "outputs-carried" / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, target)
                carried.append((name, target))
            successor.outputs[:0] = carried
            return True

    def run(self) -> None:
        while (pending := self._next()) is not None:
            backoff = BACKOFF_INITIAL_S
            while True:
                started = time.monotonic()
                try:
                    ref = self._upload(pending)
                except Exception as exc:  # any failure is retried: the files are still here
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "checkpoint_upload_failed",
                        job_id=self._job_id,
                        epoch=self._epoch,
                        seq=pending.seq,
                        error=self.last_error,
                        retry_in_s=backoff,
                    )
                    if self._closed or isinstance(exc, CheckpointExists):
                        self._done(pending)
                        break
                    if self._supersede(pending):
                        log.info("checkpoint_superseded", seq=pending.seq, step=pending.step)
                        self._done(pending)
                        break
                    self._wake.clear()
                    self._wake.wait(backoff)
                    backoff = min(BACKOFF_MAX_S, backoff * 2)
                    continue
                self.last_ref = ref
                self.last_error = None
                self.uploaded += 1
                try:
                    self._on_uploaded(ref, pending.save_s + time.monotonic() - started)
                finally:
                    self._done(pending)
                break

    def _upload(self, pending: PendingCheckpoint) -> CheckpointRef:
        # Outputs before the checkpoint exists: a crash in between leaves a chunk that the
        # next epoch redoes (named by its steps, so the overlap is visible) rather than a gap
        # in the trajectory. They go out while the checkpoint's files do (independent
        # requests, a round trip each on B2); its manifest waits for them.
        if not pending.outputs:
            return self._upload_checkpoint(pending, None)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outputs") as pool:
            outputs = pool.submit(self.outputs.upload, pending.outputs)
            try:
                return self._upload_checkpoint(pending, outputs.result)
            finally:
                if not outputs.exception():  # waits; stored: a retry must not resend them
                    pending.outputs = []

    def _upload_checkpoint(
        self, pending: PendingCheckpoint, before_manifest: Callable[[], object] | None
    ) -> CheckpointRef:
        # upload_checkpoint refuses a taken (epoch, seq): checkpoints are never overwritten.
        return upload_checkpoint(
            self._store,
            job_id=self._job_id,
            epoch=self._epoch,
            seq=pending.seq,
            step=pending.step,
            files=pending.files,
            engine=self._engine,
            platform=pending.platform,
            engine_version=pending.engine_version,
            before_manifest=before_manifest,
        )
