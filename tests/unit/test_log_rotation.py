"""daemon.log rotates by size (stderr follows the live file), and library logs (asyncssh,
botocore: stdlib logging) come out as structlog events, redacted like the rest."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from relaymd import logging as relaymd_logging
from relaymd.logging import add_secret, configure, get_logger


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    configure()


def _json_lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_log_file_rotates_by_size_and_keeps_a_bounded_number(tmp_path: Path) -> None:
    tmp_path = tmp_path / "logs"
    path = tmp_path / "daemon.log"
    configure(development=False, log_file=path, max_bytes=2_000, backups=2)
    log = get_logger("test")
    for n in range(200):
        log.info("tick", n=n)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["daemon.log", "daemon.log.1", "daemon.log.2"]
    kept = [*_json_lines(tmp_path / "daemon.log.2"), *_json_lines(tmp_path / "daemon.log.1")]
    kept += _json_lines(path)
    numbers = [line["n"] for line in kept]
    assert numbers == list(range(numbers[0], 200))  # whole lines, in order, newest last
    for name in files:
        # One line may carry a file past the limit, never more.
        assert (tmp_path / name).stat().st_size < 2_000 + 200


def test_stderr_of_the_process_follows_the_live_file(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    code = (
        "import sys, os\n"
        "from pathlib import Path\n"
        "from relaymd.logging import configure, get_logger\n"
        f"configure(development=False, log_file=Path({str(path)!r}), max_bytes=500, backups=1,"
        " capture_stdio=True)\n"
        "log = get_logger('t')\n"
        "for n in range(30): log.info('tick', n=n)\n"
        "os.write(2, b'raw stderr after rotation\\n')\n"
        "print('a print', flush=True)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert (tmp_path / "daemon.log.1").exists()
    live = path.read_text()
    assert "raw stderr after rotation" in live and "a print" in live


def test_library_logs_become_redacted_structlog_events() -> None:
    stream = io.StringIO()
    configure(development=False, stream=stream)
    add_secret("lib-s3cr3t-token")
    logging.getLogger("asyncssh").warning("Auth for %s failed: %s", "me", "lib-s3cr3t-token")
    logging.getLogger("botocore.retryhandler").info("chatty retry detail")  # below WARNING
    [line] = [orjson.loads(x) for x in stream.getvalue().splitlines() if x.strip()]
    assert line["event"] == "library_log"
    assert line["logger"] == "asyncssh"
    assert line["level"] == "warning"
    assert line["message"] == f"Auth for me failed: {relaymd_logging.REDACTED}"


def test_library_debug_logs_pass_at_debug_level() -> None:
    stream = io.StringIO()
    configure(development=False, stream=stream, level="DEBUG")
    logging.getLogger("botocore.retryhandler").debug("retry %d", 2)
    lines = [orjson.loads(x) for x in stream.getvalue().splitlines() if x.strip()]
    assert {
        "event": "library_log",
        "logger": "botocore.retryhandler",
        "message": "retry 2",
    }.items() <= lines[-1].items()
