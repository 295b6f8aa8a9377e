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
