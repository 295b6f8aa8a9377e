import subprocess
import sys
from pathlib import Path

import pytest

from relaymd.daemon.interval import next_interval
from relaymd.daemon.lock import DaemonAlreadyRunning, DaemonLock
from relaymd.models import PollSettings


def test_interval_backs_off_and_snaps_back() -> None:
    poll = PollSettings(min_interval_s=2, max_interval_s=10)
    seen = []
    value = 2.0
    for _ in range(8):
        value = next_interval(value, poll, changed=False, busy=True)
        seen.append(value)
    assert seen[0] == 3.0 and seen[-1] == 10.0 and seen == sorted(seen)
    assert next_interval(10.0, poll, changed=True, busy=True) == 2.0
    assert next_interval(10.0, poll, changed=False, busy=False, idle_cap=30) == 15.0


def test_second_lock_holder_gets_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "daemon.lock"
    with DaemonLock(path):
        code = (
            "import sys; from pathlib import Path; from relaymd.daemon.lock import DaemonLock\n"
            f"DaemonLock(Path({str(path)!r})).acquire()"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode != 0
        assert "already running" in proc.stderr
        with pytest.raises(DaemonAlreadyRunning, match="relaymd daemon stop"):
            DaemonLock(path).acquire()
    DaemonLock(path).acquire()  # released: free again


def test_interval_is_capped_by_heartbeats_while_busy_and_backs_off_on_failure() -> None:
    poll = PollSettings(min_interval_s=5, max_interval_s=60)
    assert next_interval(40, poll, changed=False, busy=True, busy_cap=30) == 30
    assert next_interval(40, poll, changed=False, busy=False, busy_cap=30) == 60
    assert next_interval(5, poll, changed=True, busy=True, failed=True) >= 10


def test_a_second_daemon_on_the_same_state_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Different XDG state dirs, one explicit state_path: the lock beside the file decides."""
    import asyncio

    from relaymd.config import load_config
    from relaymd.daemon import run_daemon
    from tests.daemon.daemon_e2e_support import local_config

    loaded = load_config(local_config(tmp_path, walltime_s=60))
    state_file = Path(loaded.config.state_path)
    monkeypatch.setenv("RELAYMD_STATE_DIR", str(tmp_path / "xdg-other"))
    first = DaemonLock(state_file.with_name(state_file.name + ".lock"))  # the other daemon
    with first, pytest.raises(DaemonAlreadyRunning, match=r"state\.sqlite\.lock"):
        asyncio.run(run_daemon(loaded, max_cycles=1))
    # The XDG lock taken before the refusal was released again.
    DaemonLock(tmp_path / "xdg-other" / "daemon.lock").acquire()


def test_holder_names_the_live_holder_and_ignores_a_stale_file(tmp_path: Path) -> None:
    """What `relaymd status` / `daemon status` ask: the pid of the process that holds the
    lock, and nobody once that process is gone (even after kill -9 left its pid behind)."""
    path = tmp_path / "daemon.lock"
    assert DaemonLock(path).holder() is None  # no file yet
    code = (
        "import sys; from pathlib import Path; from relaymd.daemon.lock import DaemonLock\n"
        f"DaemonLock(Path({str(path)!r})).acquire(); print('held', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        assert DaemonLock(path).holder() == proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert path.read_text().strip() == str(proc.pid)  # the stale file is still there
    assert DaemonLock(path).holder() is None
