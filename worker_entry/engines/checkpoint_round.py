"""One checkpoint round, the part every engine shares: a fresh local folder from the segment
runner, the time the engine takes to fill it (the handoff margin learns from it), and the
hand-over to the background uploader."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from worker_entry.engines.base import PendingCheckpoint, SegmentHooks


class CheckpointRound:
    """Started when the engine begins writing a checkpoint; ends in `submit` or `abandon`."""

    def __init__(self, hooks: SegmentHooks) -> None:
        self._hooks = hooks
        self._started = time.monotonic()
        self.seq, self.directory = hooks.new_checkpoint_dir()

    def submit(
        self,
        *,
        step: int,
        files: list[tuple[str, Path]],
        platform: str | None,
        outputs: list[tuple[str, Path]] | None = None,
        engine_version: str | None = None,
    ) -> None:
        """Queue the filled folder for upload; the engine must not touch it afterwards."""
        self._hooks.submit_checkpoint(
            PendingCheckpoint(
                seq=self.seq,
                step=step,
                files=files,
                local_dir=self.directory,
                outputs=outputs or [],
                platform=platform,
                engine_version=engine_version,
                save_s=time.monotonic() - self._started,
            )
        )

    def abandon(self) -> None:
        """Nothing worth uploading was written: drop the folder."""
        shutil.rmtree(self.directory, ignore_errors=True)
