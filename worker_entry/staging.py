"""Fetch what a segment needs from storage before its first step, all at once: the bundle
(sha256-verified, safely extracted), the resume checkpoint (falling back to older ones when
the newest fails verification), the checkpoint seqs this epoch already used and its outputs
manifest (a restarted worker's)."""

from __future__ import annotations

import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel, ValidationError

from relaymd.mailbox.models import Assignment
from relaymd.models import CheckpointRef, OutputsManifest
from relaymd.storage.base import IntegrityError, ObjectNotFound, ObjectStore, StorageError
from relaymd.storage.bundle import BundleError, UnsafeBundleError, extract_bundle
from relaymd.storage.checkpoints import (
    download_checkpoint,
    last_used_seq,
    read_outputs_manifest,
)
from worker_entry.engines.base import EngineFailure, Restored
from worker_entry.logging import get_logger

log = get_logger(__name__)


class Staged(BaseModel):
    work_dir: Path
    restored: Restored | None = None
    resumed_ref: CheckpointRef | None = None
    # Why newer checkpoints were skipped (empty when `resume` itself was good).
    fallback_reasons: list[str] = []
    # The highest checkpoint seq this epoch already used (a restarted worker's): never
    # written over. 0 when none.
    last_seq: int = 0
    outputs: OutputsManifest | None = None


def _name(ref: CheckpointRef) -> str:
    return f"{ref.epoch}-{ref.seq} (step {ref.step})"


def fetch_bundle(store: ObjectStore, assignment: Assignment, seg_dir: Path) -> Path:
    archive = seg_dir / "bundle.tar.gz"
    work_dir = seg_dir / "work"
    key = assignment.bundle.key
    try:
        store.get_file(key, archive, expected_sha256=assignment.bundle.sha256)
    except ObjectNotFound:
        raise EngineFailure(f"bundle {key} is not in storage") from None
    except IntegrityError as exc:
        raise EngineFailure(f"bundle {key} failed sha256 verification: {exc}") from None
    except StorageError as exc:
        raise EngineFailure(f"cannot download bundle {key}: {exc}", retryable=True) from None
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        extract_bundle(archive, work_dir)
    except UnsafeBundleError as exc:
        raise EngineFailure(f"unsafe bundle {key}: {exc}") from None
    except (BundleError, tarfile.TarError, OSError, EOFError) as exc:
        raise EngineFailure(f"bundle {key} is not a readable tar.gz: {exc}") from None
    finally:
        archive.unlink(missing_ok=True)
    return work_dir


def _fetch_checkpoint(
    store: ObjectStore, assignment: Assignment, ref: CheckpointRef, dest: Path
) -> Restored:
    manifest = download_checkpoint(store, ref, dest)
    problems = []
    if manifest.job_id != assignment.job_id:
        problems.append(f"manifest is for job {manifest.job_id}")
    if manifest.step != ref.step or manifest.epoch != ref.epoch or manifest.seq != ref.seq:
        problems.append(
            f"manifest says {manifest.epoch}-{manifest.seq} step {manifest.step}, "
            f"the assignment says {ref.epoch}-{ref.seq} step {ref.step}"
        )
    if manifest.engine != assignment.engine.kind:
        problems.append(f"manifest is for engine {manifest.engine}, not {assignment.engine.kind}")
    if problems:
        raise IntegrityError("; ".join(problems))
    return Restored(directory=dest, manifest=manifest)


def stage(store: ObjectStore, assignment: Assignment, seg_dir: Path) -> Staged:
    """Everything at the same time: the four are independent, and each costs storage round
    trips (~150 ms each on B2) before the first step."""
    job_id, epoch = assignment.job_id, assignment.epoch
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="staging") as pool:
        bundle = pool.submit(fetch_bundle, store, assignment, seg_dir)
        last_seq = pool.submit(last_used_seq, store, job_id, epoch)
        outputs = pool.submit(read_outputs_manifest, store, job_id, epoch)
        try:
            staged = _fetch_resume(store, assignment, seg_dir)
        except EngineFailure:
            bundle.result()  # an unusable bundle is what to report first, as before
            raise
        work_dir = bundle.result()
    return (staged or Staged(work_dir=work_dir)).model_copy(
        update={"work_dir": work_dir, "last_seq": last_seq.result(), "outputs": outputs.result()}
    )


def _fetch_resume(store: ObjectStore, assignment: Assignment, seg_dir: Path) -> Staged | None:
    """The newest usable of `resume` and its fallbacks (None for a fresh start); the
    returned `work_dir` is filled in by `stage`."""
    if assignment.resume is None:
        return None
    work_dir = seg_dir / "work"
    reasons: list[str] = []
    for index, ref in enumerate([assignment.resume, *assignment.fallbacks]):
        dest = seg_dir / f"restore-{index}"
        try:
            restored = _fetch_checkpoint(store, assignment, ref, dest)
        except (IntegrityError, ObjectNotFound, ValidationError, ValueError) as exc:
            # ObjectNotFound/IntegrityError subclass StorageError: test them first.
            reasons.append(f"checkpoint {_name(ref)} unusable: {exc}")
            log.warning(
                "checkpoint_unusable", job_id=assignment.job_id, ref=ref.prefix, error=str(exc)
            )
            shutil.rmtree(dest, ignore_errors=True)
            continue
        except StorageError as exc:
            raise EngineFailure(
                f"cannot download checkpoint {_name(ref)}: {exc}", retryable=True
            ) from None
        return Staged(
            work_dir=work_dir, restored=restored, resumed_ref=ref, fallback_reasons=reasons
        )
    raise EngineFailure("no usable checkpoint to resume from: " + " | ".join(reasons))
