"""Pack, upload and read back one job's bundle; on any failure the object is removed again.

Thread-safe: `relaymd submit` runs several directories' uploads in parallel.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from relaymd.ids import new_job_id
from relaymd.logging import get_logger
from relaymd.models import JobSpec, ObjectRef
from relaymd.storage import keys
from relaymd.submission.errors import SubmitError, SubmitInterrupted
from relaymd.submission.prepare import PreparedJob

if TYPE_CHECKING:
    from relaymd.storage.base import ObjectStore

log = get_logger(__name__)

# Called with (directory, bytes moved since the last call, total bytes of the bundle).
UploadProgress = Callable[[Path, int, int], None]


class UploadedJob(BaseModel):
    job_id: str
    directory: Path
    spec: JobSpec
    bundle: ObjectRef


def upload_bundle(
    job: PreparedJob,
    store: ObjectStore,
    progress: UploadProgress | None = None,
    *,
    job_id: str | None = None,
    cancel: threading.Event | None = None,
) -> UploadedJob:
    """Pack, upload and verify one job's bundle; on any failure the object is removed.

    `cancel` set (Ctrl-C) stops packing, upload and verify within one chunk and raises
    SubmitInterrupted.
    """
    from relaymd.storage.base import IntegrityError, StorageError
    from relaymd.storage.bundle import BundleError, PackingInterrupted, pack_bundle

    cancel = cancel or threading.Event()
    job_id = job_id or new_job_id()
    key = keys.bundle_key(job_id)

    def check_cancel(_moved: int = 0) -> None:
        if cancel.is_set():
            raise SubmitInterrupted(f"{job.directory}: submit interrupted")

    with tempfile.TemporaryDirectory(prefix="relaymd-submit-") as tmp:
        archive = Path(tmp) / "bundle.tar.gz"
        try:
            packed = pack_bundle(
                job.directory,
                archive,
                follow_external_links=job.follow_external_links,
                interrupted=cancel.is_set,
            )
        except PackingInterrupted:
            raise SubmitInterrupted(f"{job.directory}: submit interrupted") from None
        except BundleError as exc:  # changed since prepare() scanned it
            raise SubmitError(f"{job.directory}: cannot pack the job directory: {exc}") from None
        total = archive.stat().st_size

        def on_bytes(moved: int) -> None:
            check_cancel()
            if progress is not None:
                progress(job.directory, moved, total)

        try:
            check_cancel()
            ref = store.put_file(key, archive, progress=on_bytes)
            if ref.sha256 != packed.sha256 or ref.size != total:
                raise IntegrityError(
                    f"{store.url}: {key}: uploaded content differs from the bundle"
                )
            # Read it back: the bundle a worker will download is the one we checked.
            store.get_file(
                key,
                Path(tmp) / "verify.tar.gz",
                expected_sha256=packed.sha256,
                progress=check_cancel,
            )
        except BaseException as exc:
            remove_quietly(store, key)
            if cancel.is_set():
                raise SubmitInterrupted(f"{job.directory}: submit interrupted") from None
            if isinstance(exc, StorageError):
                raise SubmitError(
                    f"{job.directory}: upload to {store.url} failed: {exc}", kind="storage"
                ) from exc
            raise
    log.info("bundle_uploaded", job_id=job_id, key=key, size=ref.size, sha256=ref.sha256)
    return UploadedJob(job_id=job_id, directory=job.directory, spec=job.spec, bundle=ref)


def remove_quietly(store: ObjectStore, key: str) -> None:
    try:
        store.delete_prefix(key)
    except Exception as exc:  # the original error matters more than a failed cleanup
        log.warning("bundle_cleanup_failed", key=key, error=str(exc))
