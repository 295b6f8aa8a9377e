"""The job row for a verified bundle: the last step of a submit, in the caller's thread (the
state store is one SQLite connection)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaymd.logging import get_logger
from relaymd.models import Job, JobState, OpenMMSettings
from relaymd.submission.upload import UploadedJob, remove_quietly

if TYPE_CHECKING:
    from relaymd.state import StateStore
    from relaymd.storage.base import ObjectStore

log = get_logger(__name__)


def register(uploaded: UploadedJob, state: StateStore, store: ObjectStore) -> Job:
    """Insert the job row; if that fails, delete the bundle so nothing is left behind."""
    engine = uploaded.spec.engine
    total = engine.total_steps if isinstance(engine, OpenMMSettings) else None
    job = Job(
        id=uploaded.job_id,
        spec=uploaded.spec,
        state=JobState.QUEUED,
        bundle=uploaded.bundle,
        total_steps=total,
    )
    try:
        state.insert_job(job)
    except BaseException:
        remove_quietly(store, uploaded.bundle.key)
        raise
    try:
        state.add_event(
            job_id=job.id,
            kind="submitted",
            message=f"submitted from {uploaded.directory.resolve()}",
        )
    except Exception as exc:  # the audit line is nice to have; the job is registered
        log.warning("audit_event_failed", job_id=job.id, error=str(exc))
    log.info("job_submitted", job_id=job.id, title=job.spec.title)
    return job
