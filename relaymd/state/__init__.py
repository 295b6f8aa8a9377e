"""The local SQLite state store: jobs, allocations, relay history, audit log, status.

`StateStore` (sqlite3) serves the CLI and tests; `AsyncStateStore` (aiosqlite) the daemon.
Both take their methods from one table (`relaymd.state.operations`) of the operations
written in `relaymd.state.queries`. The async one is imported lazily so CLI commands do not
pay for aiosqlite. Type a store with these two classes (they are the seam's types).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaymd.state.errors import (
    ConflictError,
    DuplicateError,
    NotFoundError,
    SchemaTooNewError,
    StateStoreError,
)
from relaymd.state.schema import SCHEMA_VERSION
from relaymd.state.sync_store import StateStore

if TYPE_CHECKING:
    from relaymd.state.async_store import AsyncStateStore

__all__ = [
    "SCHEMA_VERSION",
    "AsyncStateStore",
    "ConflictError",
    "DuplicateError",
    "NotFoundError",
    "SchemaTooNewError",
    "StateStore",
    "StateStoreError",
]


def __getattr__(name: str) -> type[AsyncStateStore]:
    if name == "AsyncStateStore":
        from relaymd.state.async_store import AsyncStateStore

        return AsyncStateStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
