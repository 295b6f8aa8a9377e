"""The command's checkpoint sets: restored into the work dir before it runs, captured (with the
output lines they own) whenever the program completes a new one."""

from __future__ import annotations

from pathlib import Path

from relaymd.atom_config import AtomLayout
from relaymd.models import CommandSettings
from worker_entry.engines.base import Restored, SegmentHooks
from worker_entry.engines.checkpoint_round import CheckpointRound
from worker_entry.engines.command_preset import atom_dir
from worker_entry.engines.fileset import CheckpointSetWatcher, copy_file, count_samples
from worker_entry.engines.output_cut import OutputCut, apply_cuts, atom_round, counted_cuts


class CommandCheckpoints:
    """Checkpoint sets of one command run in `work_dir`; `step` is the newest one's progress
    (restored or captured): what a resume would start from."""

    def __init__(
        self,
        settings: CommandSettings,
        work_dir: Path,
        atom: AtomLayout | None,
        restored: Restored | None,
        platform: str | None,
    ) -> None:
        self.settings = settings
        self.platform = platform  # recorded in each checkpoint's manifest
        self.work_dir = work_dir
        self._atom = atom
        self.step = 0
        if restored is not None:
            self._restore(restored)
        self.watcher = CheckpointSetWatcher(
            work_dir,
            settings.checkpoint_globs,
            settings.progress_globs,
            settings.ready_marker,
            settings.settle_s,
        )
        self.watcher.mark_current_captured()

    def _restore(self, restored: Restored) -> None:
        for item in restored.manifest.files:
            copy_file(restored.directory / item.path, self.work_dir / item.path)
        self.step = restored.manifest.step
        # The program appends to these files and never cuts them back: before it resumes,
        # they must hold exactly the lines of the round it resumes from.
        cuts, _ = self._cuts(self.work_dir)
        apply_cuts(self.work_dir, cuts, "restored checkpoint")

    def _cuts(self, root: Path) -> tuple[list[OutputCut], int | None]:
        """(cuts, samples) for the checkpoint set under `root`; samples None when the set does
        not say (generic command: counted from the cut progress files instead)."""
        if self._atom is not None:
            found = atom_round(root, atom_dir(self.settings), self._atom)
            return found.cuts, found.samples
        if self.settings.output_line_counts:
            return counted_cuts(root, self.settings.output_line_counts), None
        return [], None

    def _capture_outputs(self, directory: Path, copied: list[tuple[str, Path]]) -> int:
        """Cut the outputs copied with a checkpoint to the lines it owns; its progress."""
        cuts, samples = self._cuts(directory)
        have = {rel for rel, _ in copied}
        for cut in cuts:
            live = self.work_dir / cut.path
            if cut.path not in have and live.is_file():
                # Named by the round but not carried: any later copy holds the round's lines.
                copied.append((cut.path, copy_file(live, directory / cut.path)))
        apply_cuts(directory, cuts, "checkpoint")
        if samples is not None:
            return samples
        if not self.settings.progress_globs:
            return self.step
        return count_samples(directory, self.settings.progress_globs) or 0

    def try_capture(
        self,
        hooks: SegmentHooks,
        newer_than: float | None = None,
        settled: bool = False,
    ) -> bool:
        """Capture and submit a new complete set if there is one; whether one was submitted."""
        files = self.watcher.ready(newer_than=newer_than, settled=settled)
        if files is None:
            return False
        round_ = CheckpointRound(hooks)
        copied = self.watcher.capture(files, round_.directory)
        if copied is None:
            round_.abandon()
            return False
        self.step = self._capture_outputs(round_.directory, copied)
        round_.submit(step=self.step, files=copied, platform=self.platform)
        return True
