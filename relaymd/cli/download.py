"""Fetch a job's outputs and latest checkpoint from storage, verifying every checksum.

Outputs are copied to DEST/outputs/<epoch>/..., the checkpoint to DEST/checkpoint/<epoch>-<seq>/.
Checkpoint files are checked against the manifest (whose own sha256 the daemon recorded);
output files against their segment's manifest when the worker wrote one. The checkpoint is
fetched into a hidden `.<epoch>-<seq>.partial-*` folder that is renamed only once every file
arrived, so an interrupted download never leaves a manifest without its files; each output
file lands by rename, so no output file is ever half-written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, ValidationError

from relaymd.cli.errors import CliError, ExitCode
from relaymd.models import CheckpointManifest, Job, OutputsManifest
from relaymd.storage import keys

if TYPE_CHECKING:
    from relaymd.storage.base import ObjectStore


class DownloadResult(BaseModel):
    job_id: str
    destination: Path
    files: list[Path] = Field(default_factory=list)
    verified: int = 0  # files whose sha256 was checked
    checkpoint_dir: Path | None = None


def _safe_join(base: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or ".." in parts:
        raise CliError(f"refusing to write outside {base}: object path {relative!r}")
    return base.joinpath(*parts)


def _manifest_hashes(store: ObjectStore, prefix: str) -> dict[str, str]:
    """path -> sha256 from `prefix/manifest.json`, if present and readable."""
    from relaymd.storage.base import ObjectNotFound

    try:
        manifest = OutputsManifest.model_validate_json(store.get_bytes(keys.manifest_key(prefix)))
    except (ObjectNotFound, ValidationError):
        return {}
    return {f.path: f.sha256 for f in manifest.files}


def download_job(
    job: Job,
    store: ObjectStore,
    dest: Path,
    *,
    outputs: bool = True,
    checkpoint: bool = True,
    show_progress: bool = True,
) -> DownloadResult:
    from relaymd.storage.base import StorageError

    result = DownloadResult(job_id=job.id, destination=dest)
    plan: list[tuple[str, Path, str | None]] = []  # key, local path, expected sha256
    staging: Path | None = None
    final_dir: Path | None = None
    manifest_bytes = b""
    if outputs:
        out_root = keys.job_prefix(job.id) + "outputs/"
        by_prefix: dict[str, dict[str, str]] = {}
        for key in store.list_keys(out_root):
            relative = key[len(out_root) :]
            epoch, _, inner = relative.partition("/")
            if not inner or inner == keys.MANIFEST_NAME:
                continue
            prefix = f"{out_root}{epoch}/"
            hashes = by_prefix.setdefault(prefix, _manifest_hashes(store, prefix))
            plan.append((key, _safe_join(dest / "outputs", relative), hashes.get(inner)))
    if checkpoint and job.checkpoint is not None:
        ref = job.checkpoint
        try:
            manifest_bytes = store.get_bytes(
                keys.manifest_key(ref.prefix), expected_sha256=ref.manifest_sha256
            )
            manifest = CheckpointManifest.model_validate_json(manifest_bytes)
        except (StorageError, ValidationError) as exc:
            raise CliError(
                f"checkpoint {ref.epoch}-{ref.seq} of job {job.id}: cannot read its manifest: "
                f"{exc}",
                hint="`relaymd clusters test <cluster>` checks storage; a sha256 mismatch means "
                "the object was replaced or corrupted (`--no-checkpoint` fetches the outputs)",
            ) from None
        final_dir = dest / "checkpoint" / f"{ref.epoch}-{ref.seq}"
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".{final_dir.name}.partial-"))
        result.checkpoint_dir = final_dir
        for item in manifest.files:
            plan.append((ref.prefix + item.path, _safe_join(staging, item.path), item.sha256))
    try:
        _fetch(job, store, plan, result, show_progress)
        if staging is not None and final_dir is not None:
            # The manifest goes in last, then the whole folder appears at once.
            (staging / keys.MANIFEST_NAME).write_bytes(manifest_bytes)
            if final_dir.exists():
                shutil.rmtree(final_dir)
            os.replace(staging, final_dir)
            result.files = [
                final_dir / f.relative_to(staging) if f.is_relative_to(staging) else f
                for f in result.files
            ]
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return result


def _fetch(
    job: Job,
    store: ObjectStore,
    plan: list[tuple[str, Path, str | None]],
    result: DownloadResult,
    show_progress: bool,
) -> None:
    from relaymd.cli.output import transfer_progress
    from relaymd.storage.base import StorageError

    if not plan:
        raise CliError(
            f"job {job.id} has nothing to download yet (no outputs, no checkpoint)",
            hint="wait until its first segment has checkpointed; see `relaymd jobs history`",
            code=ExitCode.NOT_FOUND,
        )
    progress = transfer_progress(show_progress)
    with progress:
        task = progress.add_task(f"download {job.id}", total=None)
        for key, local, sha in plan:
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                store.get_file(
                    key, local, expected_sha256=sha, progress=lambda n: progress.advance(task, n)
                )
            except StorageError as exc:
                raise CliError(f"{key}: download failed: {exc}") from None
            result.files.append(local)
            result.verified += sha is not None
