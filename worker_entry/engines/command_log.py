"""The command's log: its captured stdout/stderr, the tail a failure carries, fatal patterns."""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

from relaymd.models import CommandSettings

CAPTURED_LOG = "relaymd-command.log"
TAIL_LINES = 50


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        with path.open("r", errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except OSError:
        return []


def log_tail(settings: CommandSettings, work_dir: Path) -> list[str]:
    """The end of the program's own log file when it writes one, else of the captured output."""
    if settings.log_file and (work_dir / settings.log_file).is_file():
        return tail(work_dir / settings.log_file)
    return tail(work_dir / CAPTURED_LOG)


class LogScanner:
    """Reads a growing log incrementally and reports the first line matching a fatal pattern."""

    def __init__(self, path: Path, patterns: list[re.Pattern[str]]) -> None:
        self.path = path
        self.patterns = patterns
        self._offset = 0
        self._partial = ""

    def scan(self) -> str | None:
        if not self.patterns:
            return None
        try:
            with self.path.open("r", errors="replace") as fh:
                fh.seek(self._offset)
                data = fh.read()
                self._offset = fh.tell()
        except OSError:
            return None
        text = self._partial + data
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            if any(p.search(line) for p in self.patterns):
                return line
        return None


def scanners(
    settings: CommandSettings, work_dir: Path, patterns: list[re.Pattern[str]]
) -> list[LogScanner]:
    """One scanner for the captured output, one for the program's own log file if it has one."""
    found = [LogScanner(work_dir / CAPTURED_LOG, patterns)]
    if settings.log_file:
        found.append(LogScanner(work_dir / settings.log_file, patterns))
    return found
