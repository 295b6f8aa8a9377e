"""Worker-side logging: the operator's structlog setup, teed into a size-capped worker.log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROGRAM = """
import sys
from pathlib import Path
from worker_entry.logging import add_secret, get_logger, log_to_file
tee = log_to_file(Path(sys.argv[1]))
add_secret("s3cr3t-key")
get_logger("worker_test").info("segment_started", job_id="j1", key="s3cr3t-key")
tee.close()
"""


def test_log_to_file_writes_json_events_to_stderr_and_the_file(tmp_path: Path) -> None:
    log_file = tmp_path / "worker.log"
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(log_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = log_file.read_text().splitlines()
    event = json.loads(line)
    assert (event["event"], event["job_id"], event["level"]) == ("segment_started", "j1", "info")
    assert "s3cr3t-key" not in line
    assert done.stderr.strip() == line  # SLURM's copy is the same line


def test_worker_log_rolls_over_at_its_cap(tmp_path: Path) -> None:
    from io import StringIO

    from worker_entry.logging import CappedTee

    path = tmp_path / "worker.log"
    tee = CappedTee(path, cap_bytes=100, echo=StringIO())
    for i in range(30):
        tee.write(f"line {i:02d}\n")  # 8 bytes each
    tee.close()
    assert path.stat().st_size <= 100
    assert path.with_name("worker.log.1").stat().st_size <= 100
    assert path.read_text().splitlines()[-1] == "line 29"
