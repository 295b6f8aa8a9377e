"""What an engine gets from the segment runner and what it answers."""

from __future__ import annotations

import abc
import os
from enum import StrEnum
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from relaymd.models import CheckpointManifest
from worker_entry.devices import own_devices
from worker_entry.stopping import StopRequest


class EngineFailure(Exception):
    """The job cannot run: the message is the precise reason the `failed` event carries."""

    def __init__(self, reason: str, *, retryable: bool = False, log_tail: list[str] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.log_tail = log_tail or []


class Restored(BaseModel):
    """A verified checkpoint downloaded to `directory` (files at their manifest paths)."""

    directory: Path
    manifest: CheckpointManifest


class Outcome(StrEnum):
    COMPLETED = "completed"
    STOPPED = "stopped"  # a StopRequest was honoured; a final checkpoint was submitted


class EngineResult(BaseModel):
    outcome: Outcome
    step: int
    stop: StopRequest | None = None


class PendingCheckpoint(BaseModel):
    """A checkpoint the engine wrote locally, queued for background upload.

    `outputs` are the output files (trajectory, logs) written since the previous checkpoint,
    closed at this one: uploaded under outputs/<epoch>/ just before the checkpoint itself, so
    a killed worker loses outputs no further back than it loses simulation.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    seq: int
    step: int
    files: list[tuple[str, Path]]
    local_dir: Path  # removed once uploaded (or superseded)
    outputs: list[tuple[str, Path]] = Field(default_factory=list)  # also under local_dir
    platform: str | None = None
    engine_version: str | None = None
    save_s: float = 0.0  # how long the engine took to write it (for the handoff margin)


class SegmentHooks(Protocol):
    """The segment runner's services, called from the engine's (main) thread."""

    def check_stop(self) -> StopRequest | None: ...

    def new_checkpoint_dir(self) -> tuple[int, Path]:
        """(seq, an empty local folder) for the next checkpoint."""
        ...

    def submit_checkpoint(self, pending: PendingCheckpoint) -> None:
        """Queue for background upload; the engine must not touch `local_dir` afterwards."""
        ...

    def report_progress(
        self, step: int, total: int | None, ns_per_day: float | None = None
    ) -> None: ...

    def set_platform(self, platform: str) -> None: ...

    def time_left_s(self) -> float | None:
        """Seconds until the allocation deadline, None without one."""
        ...


class Engine(abc.ABC):
    name: str
    resumed_from: Literal["checkpoint", "state_xml", "start"] = "start"
    total_steps: int | None = None
    start_step: int = 0
    cuda_visible_devices: str | None = None  # the GPUs this segment runs on (use_devices)

    def use_devices(self, slots: list[int]) -> None:
        """Before prepare: the assignment's GPU slots (ADR 0026). An in-process engine keeps
        the worker's own device (a CUDA context cannot widen later), so it takes one GPU."""
        if len(slots) > 1:
            raise EngineFailure(
                f"engine {self.name} runs in the worker process on one GPU; the assignment "
                f"names {len(slots)} (resources.gpus > 1 needs a command engine)"
            )
        self.cuda_visible_devices = own_devices(os.environ)

    @abc.abstractmethod
    def prepare(self, work_dir: Path, restored: Restored | None, platform: str | None) -> None:
        """Load inputs from the extracted bundle in `work_dir` and resume from `restored`.
        Raises EngineFailure with a precise reason when inputs are missing or invalid."""

    @abc.abstractmethod
    def run(self, hooks: SegmentHooks, checkpoint_interval_s: float) -> EngineResult:
        """Run until complete or asked to stop; on a stop, submit a final checkpoint first."""

    @abc.abstractmethod
    def output_files(self) -> list[tuple[str, Path]]:
        """This segment's output files, uploaded under outputs/<epoch>/."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free resources (processes, contexts)."""
