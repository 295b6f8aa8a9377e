"""Single-instance lock: two daemons on one state file would both submit."""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path
from types import TracebackType


class DaemonAlreadyRunning(Exception):
    """Another daemon holds the lock; the message says which and what to do."""


class DaemonLock:
    """An fcntl lock on `path`, held for the life of the process (released by the kernel
    even after kill -9, so a crash never leaves a stale lock behind)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        # The real file, whatever symlinks lead to it: two paths to one lock are one lock.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path = self.path.resolve()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(fd) or "unknown"
            os.close(fd)
            raise DaemonAlreadyRunning(
                f"another relaymd daemon is already running (pid {holder}, lock {self.path}); "
                "stop it with `relaymd daemon stop` or check `relaymd daemon status`"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def holder(self) -> int | None:
        """The pid of the process holding this lock, None when nobody holds it (a file left
        by a crashed daemon is not held: the kernel released it); -1 when held by a process
        that has not written its pid yet."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _holder_pid(fd)
                return int(pid) if pid else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DaemonLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _holder_pid(fd: int) -> str | None:
    """The pid the holder wrote into the lock file (digits only), None before it wrote one."""
    match = re.search(rb"\d+", os.pread(fd, 64, 0))
    return match.group().decode() if match else None
