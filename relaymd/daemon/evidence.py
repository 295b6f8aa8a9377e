"""What a worker's report must prove before the daemon acts on it. Pure: no I/O.

A `checkpoint` event is a claim. It becomes the job's resume pointer only when it is the
job's own `jobs/<job>/checkpoints/<epoch>-<seq>/` of the current epoch, its manifest in
storage agrees on job, epoch, seq and step (checked by the runner before deciding, see
`relaymd.storage.checkpoints.verify_claimed_checkpoint`), and both seq and step move past the
current pointer. A `completed` event is believed only with a verified final checkpoint of the
current epoch at (or past) the job's total, where the job spec says what the total is.
"""

from __future__ import annotations

from relaymd.mailbox.models import WorkerEvent
from relaymd.models import CheckpointRef, CommandSettings, Job, OpenMMSettings
from relaymd.storage import keys

# Identifies one exact report: any field that differs is another claim.
ClaimKey = tuple[str, int, int, int, str, str]


def claim_key(job_id: str, ref: CheckpointRef) -> ClaimKey:
    return (job_id, ref.epoch, ref.seq, ref.step, ref.prefix, ref.manifest_sha256)


def claim_shape_refusal(job: Job, ref: CheckpointRef) -> str | None:
    """Why `ref` cannot be a checkpoint of `job`'s current epoch, judged without storage."""
    if ref.epoch != job.epoch:
        return f"it is of epoch {ref.epoch}, the job is at epoch {job.epoch}"
    expected = keys.checkpoint_prefix(job.id, ref.epoch, ref.seq)
    if ref.prefix != expected:
        return f"it names {ref.prefix!r}, not {expected!r}"
    return None


def advance_refusal(job: Job, ref: CheckpointRef) -> str | None:
    """Why `ref` would not move the pointer forward: seq and step must both advance."""
    pointer = job.checkpoint
    if pointer is None:
        return None
    if (ref.epoch, ref.seq) <= (pointer.epoch, pointer.seq):
        return f"seq {ref.epoch}-{ref.seq} does not advance past {pointer.epoch}-{pointer.seq}"
    if ref.step <= pointer.step:
        return f"step {ref.step} does not advance past {pointer.step}"
    return None


def checkpoint_refusal(
    job: Job,
    ref: CheckpointRef,
    verified: set[ClaimKey],
    rejected: dict[ClaimKey, str],
) -> str | None:
    """None when `ref` may become `job`'s pointer now; otherwise the reason it may not."""
    reason = claim_shape_refusal(job, ref) or advance_refusal(job, ref)
    if reason is not None:
        return reason
    key = claim_key(job.id, ref)
    if key not in verified:
        return rejected.get(key, "its manifest was not verified in storage")
    return None


def job_total(job: Job) -> int | None:
    """The step (or sample) count at which the job is done, from the job's own spec; the
    worker's heartbeat is not asked."""
    engine = job.spec.engine
    if isinstance(engine, OpenMMSettings):
        return engine.total_steps
    if isinstance(engine, CommandSettings):
        return engine.target_samples
    return None


def completion_refusal(job: Job, event: WorkerEvent) -> str | None:
    """Why a `completed` event of `job`'s current epoch is not completion, given the pointer
    as it stands after every checkpoint accepted so far; None when it is."""
    pointer = job.checkpoint
    if pointer is None or pointer.epoch != job.epoch:
        return f"no verified checkpoint of epoch {job.epoch}"
    if event.checkpoint is not None and claim_key(job.id, event.checkpoint) != claim_key(
        job.id, pointer
    ):
        return (
            f"its final checkpoint {event.checkpoint.prefix} (seq {event.checkpoint.seq}) "
            f"is not the verified pointer {pointer.epoch}-{pointer.seq}"
        )
    total = job_total(job)
    if total is not None and pointer.step < total:
        return f"the final verified checkpoint is at step {pointer.step} of {total}"
    return None
