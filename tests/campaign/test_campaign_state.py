"""Campaign: state faults. Two daemons on one state file, and a state file that is locked,
corrupt, read-only, unreadable or on a full disk: every case is refused (or served read-only)
with a message naming the path and the fix, and no job row is lost."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_cases import (
    RELAYMD,
    CliEnv,
    assert_clear_error,
    job_rows,
    local_config,
    make_job_dir,
    new_cli,
)


def _with_state_path(cli: CliEnv, state_path: Path, state_dir: Path) -> CliEnv:
    config = cli.root / f"config-{state_dir.name}.yaml"
    config.write_text(local_config(cli.data_dir) + f"state_path: {state_path}\n")
    env = {**cli.env, "RELAYMD_CONFIG": str(config), "RELAYMD_STATE_DIR": str(state_dir)}
    return cli.model_copy(update={"config": config, "env": env, "state_dir": state_dir})


@pytest.fixture
def first_daemon(tmp_path: Path) -> Iterator[tuple[CliEnv, subprocess.Popen[bytes]]]:
    cli = new_cli(tmp_path)
    real = tmp_path / "real" / "state.sqlite"
    first = _with_state_path(cli, real, tmp_path / "xdg-a")
    log = open(tmp_path / "first-daemon.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(RELAYMD), "daemon", "run"], env=first.env, stdout=log, stderr=log, cwd=tmp_path
    )
    lock = real.with_name("state.sqlite.lock")
    deadline = time.monotonic() + 120
    # Held once the daemon wrote its pid into the lock beside the state file.
    while not (lock.exists() and str(proc.pid) in lock.read_text()):
        assert proc.poll() is None, (tmp_path / "first-daemon.log").read_text()
        assert time.monotonic() < deadline, "the first daemon never took its lock"
        time.sleep(0.2)
    yield first, proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    log.close()


@pytest.mark.parametrize("link", ["file", "directory"])
def test_second_daemon_through_a_symlink_is_refused(
    first_daemon: tuple[CliEnv, subprocess.Popen[bytes]], link: str
) -> None:
    first, proc = first_daemon
    real = first.root / "real" / "state.sqlite"
    if link == "file":
        via = first.root / "elsewhere" / "mine.sqlite"
        via.parent.mkdir()
        via.symlink_to(real)
    else:
        (first.root / "linked-dir").symlink_to(real.parent)
        via = first.root / "linked-dir" / "state.sqlite"
    second = _with_state_path(first, via, first.root / "xdg-b")
    done = second.run("daemon", "run", "--max-cycles", "1", timeout=120)
    assert_clear_error(done, 5, "another relaymd daemon is already running", str(proc.pid))
    assert proc.poll() is None  # the first one is untouched
