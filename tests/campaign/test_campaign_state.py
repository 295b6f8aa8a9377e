"""Campaign: state faults. Two daemons on one state file, and a state file that is locked,
corrupt, read-only, unreadable or on a full disk: every case is refused (or served read-only)
with a message naming the path and the fix, and no job row is lost."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.cli_env import (
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


# --- the state file itself ------------------------------------------------------------------


def _registered(cli: CliEnv) -> str:
    """One queued job, submitted as a user would; returns its id."""
    done = cli.run("submit", str(make_job_dir(cli.root)), "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["submitted"][0]["job_id"])


def _make_read_only(path: Path) -> Callable[[], None]:
    """Read-only for this user: chmod for ordinary users, the immutable flag for root (who
    ignores modes). Returns the undo."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    mode = path.stat().st_mode
    path.chmod(mode & ~0o222)
    return lambda: path.chmod(mode)


@contextlib.contextmanager
def _read_only(*paths: Path) -> Iterator[None]:
    undo = [_make_read_only(p) for p in paths]
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def test_corrupt_state_file_is_named_and_left_alone(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    cli.state_dir.mkdir(mode=0o700)
    cli.db.write_bytes(b"these are not the pages you are looking for\n" * 100)
    before = cli.db.read_bytes()
    for args in (["status"], ["jobs", "list"], ["submit", str(make_job_dir(tmp_path))]):
        done = cli.run(*args)
        assert_clear_error(done, 1, str(cli.db), "corrupt", "backup")
    assert cli.db.read_bytes() == before  # never "repaired" into an empty state
    assert not cli.storage_dir.exists() or not any(cli.storage_dir.rglob("*.tar.gz"))


def test_truncated_state_file_is_named(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    for index in range(3):
        done = cli.run("submit", str(make_job_dir(tmp_path, f"job{index}")))
        assert done.returncode == 0, done.stderr
    with sqlite3.connect(cli.db) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = cli.db.read_bytes()
    cli.db.write_bytes(data[: len(data) // 2 + 100])
    done = cli.run("jobs", "list")
    assert_clear_error(done, 1, str(cli.db))
    assert "not a readable RelayMD state database" in done.stderr or "failed" in done.stderr


def test_state_path_is_a_directory(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    cli.db.mkdir(parents=True)
    done = cli.run("status")
    assert_clear_error(done, 1, str(cli.db))
    assert cli.db.is_dir() and not any(cli.db.iterdir())


def test_state_dir_is_a_file(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    cli.state_dir.write_text("oops\n")
    done = cli.run("jobs", "list")
    assert_clear_error(done, 1, str(cli.state_dir))
    assert cli.state_dir.read_text() == "oops\n"


def test_state_file_from_a_newer_relaymd(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    job_id = _registered(cli)
    with sqlite3.connect(cli.db) as db:
        db.execute("PRAGMA user_version = 99")
    before = job_rows(cli)
    done = cli.run("jobs", "hold", job_id)
    assert_clear_error(done, 1, str(cli.db), "upgrade RelayMD")
    assert job_rows(cli) == before


def test_locked_state_file_names_the_path_and_loses_nothing(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    job_id = _registered(cli)
    before = job_rows(cli)
    holder = sqlite3.connect(cli.db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        done = cli.run("jobs", "hold", job_id, timeout=300)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_clear_error(done, 1, str(cli.db), "locked", "retry")
    assert job_rows(cli) == before


def test_full_disk_names_the_path_and_loses_nothing(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    job_id = _registered(cli)
    with sqlite3.connect(cli.db) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = job_rows(cli)

    def tiny_disk() -> None:
        # Writes past 3000 bytes fail short, as on a full disk (the signal would kill us).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    done = subprocess.run(
        [str(RELAYMD), "jobs", "hold", job_id],
        env=cli.env,
        cwd=cli.root,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=tiny_disk,
    )
    assert_clear_error(done, 1, str(cli.db))
    assert "full" in done.stderr or "disk I/O" in done.stderr or "failed" in done.stderr
    assert job_rows(cli) == before


def test_read_only_state_file_still_lists(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    job_id = _registered(cli)
    before = job_rows(cli)
    with _read_only(cli.db):
        listed = cli.run("jobs", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [job["id"] for job in json.loads(listed.stdout)] == [job_id]
        done = cli.run("jobs", "hold", job_id)
        assert_clear_error(done, 1, str(cli.db), "read-only", "writable")
    assert job_rows(cli) == before


def test_read_only_state_directory_still_shows_status_and_jobs(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    job_id = _registered(cli)
    with sqlite3.connect(cli.db) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = job_rows(cli)
    side_files = sorted(p.name for p in cli.state_dir.iterdir())
    with _read_only(cli.state_dir):
        status = cli.run("status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["jobs"]["queued"] == 1
        plain_status = cli.run("status")
        assert plain_status.returncode == 0, plain_status.stderr
        listed = cli.run("jobs", "list")
        assert listed.returncode == 0 and job_id in listed.stdout, listed.stderr
        shown = cli.run("jobs", "show", job_id, "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == job_id
        done = cli.run("jobs", "cancel", job_id)
        assert_clear_error(done, 1, str(cli.db), "writable")
    assert job_rows(cli) == before
    assert sorted(p.name for p in cli.state_dir.iterdir()) == side_files


def test_read_only_state_directory_without_a_state_file(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    cli.state_dir.mkdir(mode=0o700)
    with _read_only(cli.state_dir):
        done = cli.run("status")
    assert_clear_error(done, 1, str(cli.db))
    assert not cli.db.exists()
