"""Open the state file for reading only, changing nothing on disk.

For `relaymd status` and the listings when the file or its folder cannot be written (a
read-only mount, a folder of another user): they still show what the daemon last saw.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from relaymd.state import files
from relaymd.state import queries as q
from relaymd.state.errors import SchemaTooNewError, StateFileProblem
from relaymd.state.schema import SCHEMA_VERSION
from relaymd.state.sync_store import StateStore


def open_readonly(path: Path | None = None) -> StateStore:
    """An existing state file, read-only. A folder we cannot write holds no fresh -shm file,
    so the file is then opened as immutable (SQLite then reads it without any lock)."""
    target = files.resolve(path)
    if not target.is_file():
        raise FileNotFoundError(2, "no state database", str(target))
    mode = "ro" if os.access(target.parent, os.W_OK) else "ro&immutable=1"
    conn = sqlite3.connect(
        f"{target.as_uri()}?mode={mode}",
        uri=True,
        timeout=q.BUSY_TIMEOUT_S,
        isolation_level=None,
    )
    store = StateStore(conn, target)
    try:
        found = store.schema_version()
        if found > SCHEMA_VERSION:
            raise SchemaTooNewError(target, found, SCHEMA_VERSION)
        if found < SCHEMA_VERSION:
            raise StateFileProblem(
                f"{target}: the state database needs an upgrade (schema {found}) but is "
                "read-only here",
                f"make {target} and its folder writable once, so RelayMD can upgrade it",
            )
    except BaseException:
        conn.close()
        raise
    return store
