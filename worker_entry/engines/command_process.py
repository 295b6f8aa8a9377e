"""The command's process group: started with its output captured, signalled as a whole."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import IO

from worker_entry.engines.base import EngineFailure
from worker_entry.engines.command_log import CAPTURED_LOG
from worker_entry.logging import get_logger

log = get_logger(__name__)

KILL_WAIT_S = 10.0


class CommandProcess:
    """One run of the command in `work_dir`; stdout and stderr appended to CAPTURED_LOG."""

    def __init__(self, command: list[str], work_dir: Path, env: dict[str, str]) -> None:
        self._log_handle: IO[bytes] | None = (work_dir / CAPTURED_LOG).open("ab")
        try:
            self._proc = subprocess.Popen(
                command,
                cwd=work_dir,
                stdin=subprocess.DEVNULL,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: signals reach every child
            )
        except OSError as exc:
            self._log_handle.close()
            raise EngineFailure(f"cannot start {command[0]}: {exc}") from None
        self.pid = self._proc.pid
        log.info("command_started", pid=self.pid, command=command)

    def poll(self) -> int | None:
        return self._proc.poll()

    def signal(self, sig: signal.Signals) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, sig)

    def kill(self) -> None:
        """SIGTERM to the group; SIGKILL if it is still alive KILL_WAIT_S later."""
        self.signal(signal.SIGTERM)
        try:
            self._proc.wait(KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self._proc.wait()
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """SIGKILL what is left of the group once its leader has exited: a child that outlives
        the command (ignoring SIGTERM, or left in the background) would keep the GPUs that
        the daemon gives the next job once the segment ends (ADR 0026)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)

    def end_now(self) -> None:
        """SIGKILL the group: for after its checkpoint was captured, when nothing it still
        does matters (AToM sleeps 20 s after SIGTERM; a second SIGTERM re-enters its handler)."""
        self.signal(signal.SIGKILL)
        self._proc.wait()
        self._kill_leftovers()

    def close(self) -> None:
        if self._proc.poll() is None:
            self.kill()
        else:
            self._kill_leftovers()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
