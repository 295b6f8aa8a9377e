"""A command engine's segment ends with none of its processes left on the GPU (ADR 0026: a
lead's held slots are freed once its worker reports the segment's end, so anything of that
engine still running would share those GPUs with the next job). Real processes, real signals.
"""

from __future__ import annotations

import time
from pathlib import Path

from worker_entry.engines.command_process import CommandProcess

# The child ignores SIGTERM (inherited), like a GPU worker process stuck in a kernel.
_SPAWN = 'trap "" TERM; sleep 600 & echo $! > child.pid; '


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # dead, not yet reaped by init


def _wait_gone(pid: int, within_s: float = 60.0) -> bool:
    """Wait on the condition; the bound only keeps a broken build from hanging the suite."""
    give_up = time.monotonic() + within_s
    while not _gone(pid):
        if time.monotonic() > give_up:
            return False
        time.sleep(0.05)
    return True


def _child(work: Path) -> int:
    while not (work / "child.pid").exists() or not (work / "child.pid").read_text().strip():
        time.sleep(0.05)
    return int((work / "child.pid").read_text())


def test_a_stopped_command_leaves_no_child_running_after_its_leader_exits(
    tmp_path: Path,
) -> None:
    # The leader exits at once on SIGTERM; its child ignores SIGTERM.
    script = _SPAWN + 'trap "exit 0" TERM; while :; do sleep 0.1; done'
    proc = CommandProcess(["bash", "-c", script], tmp_path, {"PATH": "/usr/bin:/bin"})
    child = _child(tmp_path)
    proc.kill()
    assert proc.poll() is not None
    try:
        assert _wait_gone(child), "the command's child still runs after the segment ended"
    finally:
        proc.close()


def test_a_command_that_exited_leaves_no_background_child_after_close(tmp_path: Path) -> None:
    proc = CommandProcess(["bash", "-c", _SPAWN + "exit 0"], tmp_path, {"PATH": "/usr/bin:/bin"})
    child = _child(tmp_path)
    while proc.poll() is None:
        time.sleep(0.05)
    proc.close()
    assert _wait_gone(child), "the command's background child still runs after close"
