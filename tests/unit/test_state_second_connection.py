"""A second StateStore in the same process (the Python API opens one per call, as the CLI's
commands do) must not break the first one's SQLite locks.

POSIX advisory locks belong to the process and file: closing ANY descriptor of the database
file drops SQLite's locks on it. Another process then believes it is the last connection,
deletes the WAL on close, and the first connection keeps reading a deleted WAL: a stale
snapshot that never sees the daemon's writes again (found by tests/cli/test_python_api.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_state_helpers import make_job

from relaymd.state import StateStore

WRITE_FROM_ANOTHER_PROCESS = """
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from test_state_helpers import make_job
from relaymd.state import StateStore
with StateStore.open(Path(sys.argv[1])) as other:
    other.insert_job(make_job("j-from-daemon"))
"""


def test_reopening_in_process_keeps_the_first_connection_current(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    first = StateStore.open(path)
    first.insert_job(make_job("j-first"))
    with StateStore.open(path) as second:  # e.g. Client.cancel() opening its own store
        assert second.get_job("j-first") is not None
    done = subprocess.run(
        [sys.executable, "-c", WRITE_FROM_ANOTHER_PROCESS, str(path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert Path(f"{path}-wal").exists()  # the first connection still holds the database open
    assert first.get_job("j-from-daemon") is not None
    first.close()
