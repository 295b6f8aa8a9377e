"""What the worker is doing right now: written by the engine/uploader, read by the heartbeat."""

from __future__ import annotations

import threading
from datetime import datetime

from pydantic import BaseModel

from relaymd.mailbox.models import WorkerState
from relaymd.models import CheckpointRef


class StatusSnapshot(BaseModel):
    state: WorkerState = WorkerState.STARTING
    job_id: str | None = None
    epoch: int | None = None
    step: int = 0
    total_steps: int | None = None
    ns_per_day: float | None = None
    last_checkpoint: CheckpointRef | None = None
    platform: str | None = None
    deadline: datetime | None = None
    handoff_margin_s: float | None = None
    awaiting_handoff_of: int | None = None  # waiting on a pre-written successor's gate
    cuda_visible_devices: str | None = None  # the running engine's GPUs

    @property
    def progress(self) -> float | None:
        if not self.total_steps:
            return None
        return min(1.0, max(0.0, self.step / self.total_steps))


class WorkerStatus:
    """Thread-safe holder of one StatusSnapshot."""

    def __init__(self, deadline: datetime | None) -> None:
        self._lock = threading.Lock()
        self._snap = StatusSnapshot(deadline=deadline)

    def update(self, **fields: object) -> None:
        with self._lock:
            self._snap = self._snap.model_copy(update=fields)

    def snapshot(self) -> StatusSnapshot:
        with self._lock:
            return self._snap

    def start_job(self, job_id: str, epoch: int, step: int, total: int | None) -> None:
        self.update(
            state=WorkerState.PREPARING,
            job_id=job_id,
            epoch=epoch,
            step=step,
            total_steps=total,
            ns_per_day=None,
            last_checkpoint=None,
            awaiting_handoff_of=None,
            cuda_visible_devices=None,
        )

    def clear_job(self, state: WorkerState) -> None:
        self.update(
            state=state,
            job_id=None,
            epoch=None,
            step=0,
            total_steps=None,
            ns_per_day=None,
            last_checkpoint=None,
            awaiting_handoff_of=None,
            cuda_visible_devices=None,
        )
