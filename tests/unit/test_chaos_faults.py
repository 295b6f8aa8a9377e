"""The chaos campaign's fault targeting (bench/chaos_faults.py): a worker just SIGKILLed is a
zombie until its parent reaps it and must not be the target of the next fault."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
from chaos_faults import _alive


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def test_a_killed_unreaped_process_is_not_alive() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert _alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        # Not reaped yet: the pid still exists (kill(pid, 0) succeeds) as a zombie.
        while _state(child.pid) != "Z":
            time.sleep(0.01)
        os.kill(child.pid, 0)
        assert not _alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not _alive(child.pid)
