"""Errors of the state store that a caller (or the operator) can act on."""

from __future__ import annotations

from pathlib import Path


class StateStoreError(Exception):
    """Base class for every error the state store raises on purpose."""


class SchemaTooNewError(StateStoreError):
    """The file was written by a newer RelayMD; migrating it down could lose data."""

    def __init__(self, path: Path | str, found: int, supported: int) -> None:
        self.path = str(path)
        self.found = found
        self.supported = supported
        super().__init__(
            f"{path}: the state database has schema version {found}, but this RelayMD only "
            f"understands up to version {supported}. It was written by a newer RelayMD: "
            "upgrade RelayMD on this machine (do not delete or edit the file)."
        )


class NotFoundError(StateStoreError, LookupError):
    """An update named a row that does not exist."""


class DuplicateError(StateStoreError):
    """An insert named a row that already exists."""


class ConflictError(StateStoreError):
    """A compare-and-set update found the row changed by someone else since it was read."""


class StateFileProblem(StateStoreError):
    """The state file cannot be used as it is; the message names the path and the fix."""

    def __init__(self, message: str, hint: str, kind: str = "other") -> None:
        super().__init__(message)
        self.hint = hint
        # locked, full, corrupt, readonly, cantopen or other: callers decide on retries.
        self.kind = kind


def describe_state_failure(exc: BaseException, path: Path | str) -> StateFileProblem:
    """A clear message for an SQLite or OS error met on the state file at `path`."""
    import errno
    import sqlite3

    path = Path(path)
    folder = path.parent
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    os_errno = getattr(exc, "errno", None)
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in text:
        return StateFileProblem(
            f"{path}: the state database is locked by another process",
            f"another relaymd command or a stuck process holds it (`fuser {path}` shows "
            "which); wait for it or stop it, then retry. Nothing was changed.",
            "locked",
        )
    if name.startswith("SQLITE_FULL") or os_errno == errno.ENOSPC or "disk is full" in text:
        return StateFileProblem(
            f"{path}: the disk holding the state database is full",
            f"free space on the file system of {folder}, then retry. Nothing was changed.",
            "full",
        )
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text:
        return StateFileProblem(
            f"{path}: not a readable RelayMD state database (corrupt, or another kind of file)",
            f"restore {path} from a backup, or move it aside to start with an empty state "
            "(jobs registered in it are then unknown to RelayMD)",
            "corrupt",
        )
    if (
        name.startswith("SQLITE_READONLY")
        or "readonly" in text
        or os_errno
        in (
            errno.EACCES,
            errno.EPERM,
            errno.EROFS,
        )
    ):
        return StateFileProblem(
            f"{path}: the state database is read-only here ({exc})",
            f"make {path} and its folder {folder} writable by this user; read-only commands "
            "(`relaymd status`, `relaymd jobs list`) still work",
            "readonly",
        )
    if name.startswith("SQLITE_CANTOPEN") or os_errno in (errno.ENOTDIR, errno.EISDIR):
        return StateFileProblem(
            f"{path}: cannot open the state database ({exc})",
            f"check that {folder} is a writable directory and {path} a file "
            "(RELAYMD_STATE_DIR / `state_path` in the config)",
            "cantopen",
        )
    if isinstance(exc, sqlite3.Error | OSError):
        return StateFileProblem(
            f"{path}: the state database failed: {exc}",
            f"check the disk and the permissions of {folder}; rerun with --debug for details",
        )
    return StateFileProblem(f"{path}: {exc}", "rerun with --debug for details")
