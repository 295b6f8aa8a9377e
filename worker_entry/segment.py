"""One segment: one assignment (job, epoch) from staging to its terminal event."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from relaymd.mailbox.models import Assignment, EventKind, WorkerEvent, WorkerState
from relaymd.models import (
    CheckpointRef,
    HandoffMarker,
)
from relaymd.storage import keys
from relaymd.storage.base import ObjectStore, StorageError
from relaymd.storage.checkpoints import OutputsWriter
from worker_entry.engines import make_engine
from worker_entry.engines.base import Engine, EngineFailure, Outcome, PendingCheckpoint
from worker_entry.heartbeat import HeartbeatWriter
from worker_entry.logging import get_logger
from worker_entry.mailbox_io import Mailbox
from worker_entry.margin import HandoffMargin
from worker_entry.staging import stage
from worker_entry.status import WorkerStatus
from worker_entry.stopping import StopMonitor, StopRequest
from worker_entry.uploader import CheckpointUploader

log = get_logger(__name__)

NO_DEADLINE_UPLOAD_WAIT_S = 600.0
OUTPUT_UPLOAD_ATTEMPTS = 3


class SegmentRunner:
    """Runs one assignment; doubles as the engine's SegmentHooks."""

    def __init__(
        self,
        *,
        assignment: Assignment,
        store: ObjectStore,
        mailbox: Mailbox,
        status: WorkerStatus,
        heartbeat: HeartbeatWriter,
        monitor: StopMonitor,
        margin: HandoffMargin,
        work_root: Path,
        platform: str | None,
    ) -> None:
        self.a = assignment
        self.store = store
        self.mailbox = mailbox
        self.status = status
        self.heartbeat = heartbeat
        self.monitor = monitor
        self.margin = margin
        self.platform = platform
        self.seg_dir = work_root / f"{assignment.job_id}-{assignment.epoch}"
        self._seq = 0
        self._uploader: CheckpointUploader | None = None
        self._stop_at: float | None = None
        self.last_step = assignment.resume.step if assignment.resume else 0

    # -- events ------------------------------------------------------------------------
    def _event(self, kind: EventKind, **fields: object) -> None:
        self.mailbox.append(
            WorkerEvent(
                kind=kind,
                allocation_id=self.mailbox.allocation_id,
                job_id=self.a.job_id,
                epoch=self.a.epoch,
                **fields,
            )
        )

    def _last_ref(self) -> CheckpointRef | None:
        return self._uploader.last_ref if self._uploader else None

    # -- SegmentHooks --------------------------------------------------------------------
    def check_stop(self) -> StopRequest | None:
        request = self.monitor.check(self.a.job_id, self.a.epoch)
        if request is not None and self._stop_at is None:
            self._stop_at = time.monotonic()
            self.status.update(state=WorkerState.STOPPING)
            self.heartbeat.poke()
        return request

    def new_checkpoint_dir(self) -> tuple[int, Path]:
        self._seq += 1
        directory = self.seg_dir / "checkpoints" / str(self._seq)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return self._seq, directory

    def submit_checkpoint(self, pending: PendingCheckpoint) -> None:
        assert self._uploader is not None
        self._uploader.submit(pending)

    def report_progress(
        self, step: int, total: int | None, ns_per_day: float | None = None
    ) -> None:
        self.last_step = step
        self.status.update(step=step, total_steps=total, ns_per_day=ns_per_day)

    def set_platform(self, platform: str) -> None:
        self.status.update(platform=platform)

    def time_left_s(self) -> float | None:
        return self.monitor.time_left_s()

    def _on_uploaded(self, ref: CheckpointRef, seconds: float) -> None:
        self.margin.observe(seconds)
        self.status.update(last_checkpoint=ref, handoff_margin_s=self.margin.seconds)
        self._event(EventKind.CHECKPOINT, step=ref.step, checkpoint=ref)
        self.heartbeat.poke()

    # -- the segment ---------------------------------------------------------------------
    def _upload_wait_s(self) -> float:
        left = self.monitor.time_left_s()
        if left is None:
            return NO_DEADLINE_UPLOAD_WAIT_S
        return max(1.0, left - 1.0)

    def run(self) -> EventKind:
        a = self.a
        self.monitor.reset()
        self.status.start_job(a.job_id, a.epoch, self.last_step, None)
        self.heartbeat.poke()
        shutil.rmtree(self.seg_dir, ignore_errors=True)
        self.seg_dir.mkdir(parents=True)
        engine: Engine | None = None
        try:
            try:
                staged = stage(self.store, a, self.seg_dir)
                if staged.fallback_reasons:
                    assert staged.resumed_ref is not None
                    self._event(
                        EventKind.CHECKPOINT_FALLBACK,
                        step=staged.resumed_ref.step,
                        checkpoint=staged.resumed_ref,
                        reason="; ".join(staged.fallback_reasons)
                        + f"; resuming from {staged.resumed_ref.epoch}-{staged.resumed_ref.seq}",
                    )
                engine = make_engine(a.engine)
                engine.use_devices(a.devices)
                engine.prepare(staged.work_dir, staged.restored, self.platform)
                self._seq = staged.last_seq
                outputs = OutputsWriter(
                    self.store, job_id=a.job_id, epoch=a.epoch, manifest=staged.outputs
                )
            except StorageError as exc:
                raise EngineFailure(f"storage unavailable: {exc}", retryable=True) from None
            self.status.update(
                state=WorkerState.RUNNING,
                step=engine.start_step,
                total_steps=engine.total_steps,
                handoff_margin_s=self.margin.seconds,
                cuda_visible_devices=engine.cuda_visible_devices,
            )
            self._uploader = CheckpointUploader(
                self.store,
                job_id=a.job_id,
                epoch=a.epoch,
                engine=engine.name,
                outputs=outputs,
                on_uploaded=self._on_uploaded,
            )
            self._uploader.start()
            self._started(engine, staged.resumed_ref)
            self.heartbeat.poke()
            result = engine.run(self, a.checkpoint_interval_s)
            return self._finish(engine, result.outcome, result.step, result.stop)
        except EngineFailure as exc:
            return self._fail(exc.reason, exc.retryable, exc.log_tail)
        except Exception as exc:  # an engine crash (NaN, OpenMM error) ends the job, not us
            log.exception("segment_crashed", job_id=a.job_id, epoch=a.epoch)
            return self._fail(f"{type(exc).__name__}: {exc}", False, [])
        finally:
            if engine is not None:
                engine.close()
            if self._uploader is not None:
                self._uploader.close()
            shutil.rmtree(self.seg_dir, ignore_errors=True)

    def _started(self, engine: Engine, resumed_ref: CheckpointRef | None) -> None:
        self._event(
            EventKind.STARTED,
            step=engine.start_step,
            resumed_from=engine.resumed_from,
            checkpoint=resumed_ref,
            cuda_visible_devices=engine.cuda_visible_devices,
        )

    def _fail(self, reason: str, retryable: bool, log_tail: list[str]) -> EventKind:
        if self._uploader is not None:
            self._uploader.wait_idle(min(self._upload_wait_s(), 120.0))
        self._event(
            EventKind.FAILED,
            step=self.last_step,
            reason=reason,
            retryable=retryable,
            log_tail=log_tail[-50:],
            checkpoint=self._last_ref(),
        )
        return EventKind.FAILED

    def _upload_outputs(self, engine: Engine) -> None:
        assert self._uploader is not None
        files = engine.output_files()
        if not files:
            return
        for attempt in range(1, OUTPUT_UPLOAD_ATTEMPTS + 1):
            try:
                self._uploader.outputs.upload(files)
                return
            except (StorageError, OSError) as exc:
                log.warning("outputs_upload_failed", attempt=attempt, error=str(exc))
                time.sleep(min(5.0, attempt))

    def _finish(
        self, engine: Engine, outcome: Outcome, step: int, stop: StopRequest | None
    ) -> EventKind:
        assert self._uploader is not None
        self.status.update(state=WorkerState.STOPPING, step=step)
        self.heartbeat.poke()
        uploaded = self._uploader.wait_idle(self._upload_wait_s())
        if outcome is Outcome.STOPPED and self._stop_at is not None and uploaded:
            # The true cost of a handoff: stop noticed -> final checkpoint verified.
            self.margin.observe(time.monotonic() - self._stop_at)
            self.status.update(handoff_margin_s=self.margin.seconds)
        self._upload_outputs(engine)
        ref = self._last_ref()
        note = "" if uploaded else f"; final checkpoint not uploaded ({self._uploader.last_error})"
        if outcome is Outcome.COMPLETED:
            if not uploaded:
                return self._fail("final checkpoint could not be uploaded" + note, True, [])
            self._event(EventKind.COMPLETED, step=step, checkpoint=ref)
            return EventKind.COMPLETED
        assert stop is not None
        if stop.event is EventKind.HANDOFF and uploaded and ref is not None:
            self._mark_handoff(ref)
        self._event(stop.event, step=step, checkpoint=ref, reason=stop.reason + note)
        return stop.event

    def _mark_handoff(self, ref: CheckpointRef) -> None:
        """Name the handoff checkpoint where a pre-written successor waits for it (ADR 0009).

        Best effort: without the marker the daemon binds the successor on its next poll."""
        marker = HandoffMarker(job_id=self.a.job_id, epoch=self.a.epoch, checkpoint=ref)
        try:
            self.store.put_bytes(
                keys.handoff_key(self.a.job_id, self.a.epoch), marker.model_dump_json().encode()
            )
        except StorageError as exc:
            log.warning("handoff_marker_failed", job_id=self.a.job_id, error=str(exc))
