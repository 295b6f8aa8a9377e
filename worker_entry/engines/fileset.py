"""A command's checkpoint is a SET of files captured together: only when the ready marker
exists and nothing in the set has changed for `settle_s`, so a half-written round is never
uploaded. Matching is by glob relative to the work dir."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

Signature = tuple[tuple[str, int, int], ...]


def glob_files(work_dir: Path, patterns: list[str]) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in work_dir.glob(pattern) if p.is_file())
    return sorted(found)


def copy_file(source: Path, target: Path) -> Path:
    """Copy with metadata, creating the target's folders; the target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return target


def count_samples(work_dir: Path, patterns: list[str]) -> int | None:
    """Non-empty lines per directory of progress files; the slowest directory (replica) counts.
    None while no progress file exists."""
    per_dir: dict[Path, int] = {}
    for path in glob_files(work_dir, patterns):
        try:
            with path.open("rb") as fh:
                lines = sum(1 for line in fh if line.strip())
        except OSError:
            continue
        per_dir[path.parent] = per_dir.get(path.parent, 0) + lines
    return min(per_dir.values()) if per_dir else None


class CheckpointSetWatcher:
    def __init__(
        self,
        work_dir: Path,
        globs: list[str],
        carry_globs: list[str],
        marker: str | None,
        settle_s: float,
    ) -> None:
        self.work_dir = work_dir
        self.globs = globs
        self.carry_globs = carry_globs  # travel with each checkpoint (progress files)
        self.marker = marker
        self.settle_s = settle_s
        self._captured: Signature | None = None
        self._pending: Signature | None = None
        self._pending_since = 0.0

    def _files(self) -> list[Path]:
        files = glob_files(self.work_dir, self.globs)
        if not files:
            return []
        marker = [self.work_dir / self.marker] if self.marker else []
        return sorted(set(files) | {m for m in marker if m.is_file()})

    def signature(self) -> tuple[Signature, list[Path], float] | None:
        """(signature, files, newest mtime) of a complete set, or None."""
        if self.marker and not (self.work_dir / self.marker).is_file():
            return None
        files = self._files()
        if not files:
            return None
        entries = []
        newest = 0.0
        try:
            for path in files:
                st = path.stat()
                entries.append(
                    (path.relative_to(self.work_dir).as_posix(), st.st_mtime_ns, st.st_size)
                )
                newest = max(newest, st.st_mtime)
        except FileNotFoundError:
            return None  # a file vanished mid-scan: the set is being rewritten
        return tuple(entries), files, newest

    def mark_current_captured(self) -> None:
        """The set as it is now (e.g. just restored) needs no upload."""
        current = self.signature()
        self._captured = current[0] if current else None

    def ready(self, newer_than: float | None = None, settled: bool = False) -> list[Path] | None:
        """Files of a new, settled set (mtime newer than `newer_than`), else None.
        `settled=True` skips the wait (the writer has exited)."""
        current = self.signature()
        if current is None:
            self._pending = None
            return None
        sig, files, newest = current
        if sig == self._captured:
            return None
        if newer_than is not None and newest < newer_than:
            return None
        now = time.monotonic()
        if sig != self._pending:
            self._pending, self._pending_since = sig, now
            if not settled:
                return None
        if not settled and now - self._pending_since < self.settle_s:
            return None
        return files

    def capture(self, files: list[Path], dest: Path) -> list[tuple[str, Path]] | None:
        """Copy the set to `dest`; None if it changed while copying (try again later)."""
        before = self.signature()
        copied: list[tuple[str, Path]] = []
        # Carried files (sample logs) grow every cycle: copied along, not waited on.
        carried = [p for p in glob_files(self.work_dir, self.carry_globs) if p not in files]
        for path in [*files, *carried]:
            rel = path.relative_to(self.work_dir).as_posix()
            try:
                copied.append((rel, copy_file(path, dest / rel)))
            except FileNotFoundError:
                return None
        after = self.signature()
        if before is None or after is None or before[0] != after[0]:
            return None
        self._captured = after[0]
        return copied
