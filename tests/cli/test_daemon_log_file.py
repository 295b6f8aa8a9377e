"""`daemon run --log-file` (what `daemon start` runs): JSON events in a file that rotates."""

from __future__ import annotations

import orjson

from tests.support.cli_env import CliEnv


def test_daemon_logs_to_a_rotating_file_and_stderr_stays_empty(cli: CliEnv) -> None:
    log = cli.state_dir / "daemon.log"
    done = cli.run(
        "daemon",
        "run",
        "--max-cycles",
        "2",
        "--log-file",
        str(log),
        env={"RELAYMD_LOG_MAX_BYTES": "100", "RELAYMD_LOG_BACKUPS": "2"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout == ""
    rotated = log.with_name("daemon.log.1")
    assert rotated.exists()
    assert not log.with_name("daemon.log.3").exists()
    events = [orjson.loads(line) for p in (rotated, log) for line in p.read_text().splitlines()]
    assert [e["event"] for e in events] == ["daemon_started", "daemon_stopped"]
