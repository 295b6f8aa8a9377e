"""The object-store interface. Two backends: S3-compatible (B2) and file://.

Synchronous on purpose: boto3 is synchronous; async callers use `asyncio.to_thread`.
Every download verifies sha256 when the caller knows it; objects are never overwritten
in place by the project's own key layout, so a key names one immutable content.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from relaymd.models import ObjectRef
from relaymd.storage.listing import ObjectListing

# Called with the number of bytes moved since the previous call.
ProgressCallback = Callable[[int], None]


class StorageError(Exception):
    """Storage could not do what was asked (after retries)."""


class ObjectNotFound(StorageError):
    pass


class IntegrityError(StorageError):
    """Content did not match its recorded sha256 or size."""


class TransferCancelled(Exception):
    """Raised by a progress callback to stop a transfer (Ctrl-C): never retried, never
    turned into a StorageError."""


class ObjectStore(ABC):
    """A flat key space under one root (bucket + prefix, or a directory)."""

    url: str

    @abstractmethod
    def put_file(self, key: str, path: Path, progress: ProgressCallback | None = None) -> ObjectRef:
        """Upload `path` to `key`; returns its ref with sha256 and size."""

    def get_file(
        self,
        key: str,
        dest: Path,
        expected_sha256: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Download `key` to `dest` atomically; IntegrityError if the sha256 differs
        (and `dest` is left untouched)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        try:
            sha = self._download(key, Path(tmp), progress)
            self._check_sha(key, sha, expected_sha256)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @abstractmethod
    def _download(self, key: str, tmp: Path, progress: ProgressCallback | None) -> str:
        """Write the bytes of `key` into the existing file `tmp`; returns their sha256."""

    def _check_sha(self, key: str, actual: str, expected: str | None) -> None:
        if expected is not None and actual != expected:
            raise IntegrityError(
                f"{self.url}: {key}: sha256 {actual} does not match the expected "
                f"{expected}; the object is corrupt or was replaced"
            )

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> ObjectRef: ...

    @abstractmethod
    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes of `key`; ObjectNotFound if there is no such object."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """All keys below `prefix`, sorted."""

    @abstractmethod
    def list_objects(self, prefix: str) -> ObjectListing:
        """Every object below `prefix` with its ETag and size, sorted by key."""

    @abstractmethod
    def get_range(self, key: str, start: int, length: int) -> bytes:
        """At most `length` bytes of `key` from byte `start` (b"" at or past its end);
        ObjectNotFound if there is no such object."""

    @abstractmethod
    def delete_key(self, key: str) -> None:
        """Delete one object; deleting an absent one is not an error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every key below `prefix`; returns how many."""

    def check(self) -> None:
        """Raise StorageError if the store cannot be reached or written (clusters test)."""
        probe = "relaymd-probe/ping"
        self.put_bytes(probe, b"ping")
        if self.get_bytes(probe) != b"ping":
            raise StorageError(f"{self.url}: probe object read back different content")
        self.delete_prefix("relaymd-probe/")
