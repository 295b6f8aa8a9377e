"""The whole submit: several directories uploaded in parallel then registered in order, or one
directory (demo, Python API, tests). Ctrl-C leaves nothing unregistered behind."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from relaymd.config import LoadedConfig
from relaymd.ids import new_job_id
from relaymd.logging import get_logger
from relaymd.models import Job, JobSpec, ObjectRef
from relaymd.storage import keys
from relaymd.submission.errors import SubmitError, SubmitInterrupted
from relaymd.submission.prepare import PreparedJob, prepare
from relaymd.submission.register import register
from relaymd.submission.spec import SpecOverrides
from relaymd.submission.upload import UploadedJob, UploadProgress, remove_quietly, upload_bundle

if TYPE_CHECKING:
    from relaymd.state import StateStore
    from relaymd.storage.base import ObjectStore

log = get_logger(__name__)


class SubmitResult(BaseModel):
    job_id: str | None  # None for --dry-run
    directory: Path
    title: str
    bundle: ObjectRef | None = None
    dry_run: bool = False


def submit_jobs(
    prepared: Sequence[PreparedJob],
    *,
    store: ObjectStore,
    state: StateStore,
    progress: UploadProgress | None = None,
    max_parallel: int = 4,
) -> list[SubmitResult | SubmitError]:
    """Upload all bundles in parallel, then register each verified one, in input order.

    Each directory succeeds or fails on its own; a failure is returned in its place.
    Ctrl-C (KeyboardInterrupt in this thread) stops every upload within one chunk, removes
    every bundle not yet registered and raises SubmitInterrupted.
    """
    cancel = threading.Event()
    job_ids = [new_job_id() for _ in prepared]
    registered: set[str] = set()
    pool = ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(prepared))))
    try:
        futures = [
            pool.submit(upload_bundle, job, store, progress, job_id=job_id, cancel=cancel)
            for job, job_id in zip(prepared, job_ids, strict=True)
        ]
        outcomes = [_outcome(item, future) for item, future in zip(prepared, futures, strict=True)]
        pool.shutdown()
        results: list[SubmitResult | SubmitError] = []
        for outcome in outcomes:
            if isinstance(outcome, SubmitError):
                results.append(outcome)
                continue
            job = register(outcome, state, store)
            registered.add(job.id)
            results.append(
                SubmitResult(
                    job_id=job.id,
                    directory=outcome.directory,
                    title=job.spec.title,
                    bundle=job.bundle,
                )
            )
        return results
    except (KeyboardInterrupt, SubmitInterrupted):
        with _sigint_ignored():
            cancel.set()
            pool.shutdown(wait=True)  # each upload stops at its next chunk
            for job_id in job_ids:
                if job_id not in registered:
                    remove_quietly(store, keys.bundle_key(job_id))
        log.warning("submit_interrupted", registered=len(registered))
        raise SubmitInterrupted(
            f"submit interrupted: {len(registered)} job(s) registered before Ctrl-C; "
            "every other upload was stopped and removed"
        ) from None


def _outcome(item: PreparedJob, future: Future[UploadedJob]) -> UploadedJob | SubmitError:
    """One directory's upload: its bundle, or the error that stays with that directory
    (Ctrl-C is not one: it stops them all)."""
    try:
        return future.result()
    except SubmitError as exc:
        return exc
    except SubmitInterrupted:
        raise
    except Exception as exc:  # one directory's surprise must not strand the others
        log.exception("submit_failed", directory=str(item.directory))
        return SubmitError(f"{item.directory}: {type(exc).__name__}: {exc}", kind="storage")


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """The cleanup after Ctrl-C must not be cut short by a second Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def submit_directory(
    directory: Path,
    *,
    loaded: LoadedConfig,
    store: ObjectStore,
    state: StateStore,
    flags: SpecOverrides | None = None,
    spec: JobSpec | None = None,
) -> Job:
    """Validate, upload, verify and register one directory (demo, Python API, tests)."""
    uploaded = upload_bundle(prepare(directory, loaded, flags, spec=spec), store)
    return register(uploaded, state, store)
