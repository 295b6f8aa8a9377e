"""Worker-side logging: the operator's structlog configuration (relaymd.logging), written to
stderr (SLURM captures it) and teed into <alloc-dir>/worker.log, size-capped, so the daemon can
read a tail without knowing where SLURM put the job's output.

Usage, as on the operator side: `log = get_logger(__name__)`; `add_secret(key)` for values
that must never reach a log.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TextIO

from relaymd.logging import add_secret, configure, get_logger

__all__ = ["CappedTee", "add_secret", "get_logger", "log_to_file"]

DEFAULT_CAP_BYTES = 4 << 20


class CappedTee:
    """A text stream writing to stderr and to a file that rolls over to `<name>.1` at `cap`."""

    def __init__(self, path: Path, cap_bytes: int = DEFAULT_CAP_BYTES, echo: TextIO | None = None):
        self._path = path
        self._cap = cap_bytes
        self._echo = echo if echo is not None else sys.stderr
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8")
        self._size = path.stat().st_size

    def write(self, text: str) -> int:
        with self._lock:
            self._echo.write(text)
            data = text.encode("utf-8", "replace")
            if self._size + len(data) > self._cap:
                self._roll()
            self._file.write(text)
            self._file.flush()
            self._size += len(data)
        return len(text)

    def _roll(self) -> None:
        self._file.close()
        self._path.replace(self._path.with_name(self._path.name + ".1"))
        self._file = self._path.open("a", encoding="utf-8")
        self._size = 0

    def flush(self) -> None:
        with self._lock:
            self._echo.flush()
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def log_to_file(path: Path) -> CappedTee:
    """Send this process's logs to stderr and to `path` (capped); close the tee at exit."""
    tee = CappedTee(path)
    configure(stream=tee)
    return tee
