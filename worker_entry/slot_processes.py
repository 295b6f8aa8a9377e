"""Find and SIGKILL every process a slot's worker started, also after the worker itself died.

A command engine runs in its own session (worker_entry/engines/command_process.py), so killing
the worker's process group leaves it running on the slot's GPU. Every process of a slot
carries the slot's token in its environment (inherited from the worker); this scans /proc
for it, which needs no parent link (an orphan is re-parented to init).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from worker_entry.logging import get_logger

log = get_logger(__name__)

PROC = Path("/proc")
SCAN_ROUNDS = 5  # a process may fork while being killed: look again until none is left


def processes_with_token(token: str, env_name: str = "RELAYMD_SLOT_TOKEN") -> list[int]:
    """Pids of this user's processes whose environment has `env_name=token`."""
    needle = f"{env_name}={token}".encode()
    me = os.getpid()
    found: list[int] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _kill_group_and_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def kill_slot_processes(worker_pid: int | None, token: str) -> int:
    """SIGKILL the worker's process group (when `worker_pid` is given) and every process that
    carries `token`, with their process groups; returns how many processes were found."""
    if worker_pid is not None:
        _kill_group_and_pid(worker_pid)
    total = 0
    for _ in range(SCAN_ROUNDS):
        pids = processes_with_token(token)
        if not pids:
            break
        total += len(pids)
        for pid in pids:
            _kill_group_and_pid(pid)
    if total:
        log.warning("slot_leftovers_killed", processes=total)
    return total
