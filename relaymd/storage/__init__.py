"""Object storage (S3-compatible / B2, and file://), checkpoints and bundles.

Imported by the worker: only relaymd.models, relaymd.mailbox.files (atomic local writes) and
libraries from the shared core may be used here. boto3 is imported only when an s3:// store
is opened.
"""

from __future__ import annotations

from relaymd.models import StorageAccess
from relaymd.storage.base import (
    IntegrityError,
    ObjectNotFound,
    ObjectStore,
    ProgressCallback,
    StorageError,
)
from relaymd.storage.file import FileStore

__all__ = [
    "FileStore",
    "IntegrityError",
    "ObjectNotFound",
    "ObjectStore",
    "ProgressCallback",
    "StorageError",
    "open_store",
]


def open_store(access: StorageAccess) -> ObjectStore:
    """The store `access.url` names: file:///abs/path or s3://bucket[/prefix]."""
    if access.url.startswith("file://"):
        return FileStore.from_url(access.url)
    if access.url.startswith("s3://"):
        from relaymd.storage.s3 import S3Store

        return S3Store(access)
    raise StorageError(
        f"{access.url}: unsupported storage URL; use s3://bucket/prefix or file:///absolute/path"
    )
