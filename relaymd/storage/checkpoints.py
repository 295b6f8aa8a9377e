"""Checkpoints in object storage (docs/storage-layout.md): upload, verify, fetch, list, delete.

A checkpoint is the files under `jobs/<job>/checkpoints/<epoch>-<seq>/` plus `manifest.json`,
written last: without a manifest the checkpoint does not exist. Manifests are never
overwritten, and a CheckpointRef pins the manifest's own sha256, so a ref names exactly one
content.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from relaymd.models import (
    CheckpointManifest,
    CheckpointRef,
    ManifestFile,
    ObjectRef,
    OutputsManifest,
    utcnow,
)
from relaymd.storage import keys, parallel
from relaymd.storage.base import (
    IntegrityError,
    ObjectNotFound,
    ObjectStore,
    ProgressCallback,
    StorageError,
)
from relaymd.storage.hashing import sha256_bytes


class CheckpointExists(StorageError):
    """A manifest is already at this (job, epoch, seq): checkpoints are immutable."""


def _check_relpath(relpath: str, where: str) -> PurePosixPath:
    path = PurePosixPath(relpath)
    if (
        not relpath
        or path.is_absolute()
        or any(part in ("", ".", "..") for part in relpath.split("/"))
    ):
        raise StorageError(f"{where}: file path {relpath!r} must be relative, without '..'")
    return path


def _check_files(files: Sequence[tuple[str, Path]], where: str) -> None:
    seen: set[str] = set()
    for relpath, _ in files:
        _check_relpath(relpath, where)
        if relpath == keys.MANIFEST_NAME:
            raise StorageError(f"{where}: {keys.MANIFEST_NAME!r} is reserved for the manifest")
        if relpath in seen:
            raise StorageError(f"{where}: file path {relpath!r} listed twice")
        seen.add(relpath)


def upload_checkpoint(
    store: ObjectStore,
    *,
    job_id: str,
    epoch: int,
    seq: int,
    step: int,
    files: Sequence[tuple[str, Path]],
    engine: str,
    platform: str | None = None,
    engine_version: str | None = None,
    progress: ProgressCallback | None = None,
    before_manifest: Callable[[], object] | None = None,
) -> CheckpointRef:
    """Upload `files` (relative path, local file), then the manifest, then verify both.

    `before_manifest` runs once the files are stored and before the manifest is written
    (the uploader waits there for the segment's outputs, sent meanwhile); if it raises, no
    manifest is written."""
    prefix = keys.checkpoint_prefix(job_id, epoch, seq)
    manifest_key = keys.manifest_key(prefix)
    _check_files(files, f"checkpoint {prefix}")
    if store.exists(manifest_key):
        raise CheckpointExists(
            f"{store.url}: {manifest_key} already exists; checkpoints are immutable, "
            "use the next seq"
        )
    # The files at once, and only when every one is stored the manifest: it is what makes
    # the checkpoint exist, so it must never name a file that is not there yet.
    uploaded = parallel.each(
        lambda item: store.put_file(prefix + item[0], item[1], progress=progress), list(files)
    )
    entries = [
        ManifestFile(path=relpath, sha256=ref.sha256, size=ref.size)
        for (relpath, _), ref in zip(files, uploaded, strict=True)
    ]
    if before_manifest is not None:
        before_manifest()
    manifest = CheckpointManifest(
        job_id=job_id,
        epoch=epoch,
        seq=seq,
        step=step,
        engine=engine,
        platform=platform,
        engine_version=engine_version,
        files=entries,
    )
    data = manifest.model_dump_json(indent=2).encode()
    manifest_ref = store.put_bytes(manifest_key, data)
    ref = CheckpointRef(
        epoch=epoch, seq=seq, step=step, prefix=prefix, manifest_sha256=manifest_ref.sha256
    )
    # Read back what verify_checkpoint reads, but in one round: the file list is known here.
    checks: list[Callable[[], object]] = [functools.partial(fetch_manifest, store, ref)]
    checks += [functools.partial(_check_size, store, ref.prefix, item) for item in entries]
    parallel.each(lambda check: check(), checks)
    return ref


def _check_size(store: ObjectStore, prefix: str, item: ManifestFile) -> None:
    key = prefix + item.path
    size = store.size(key)
    if size != item.size:
        raise IntegrityError(
            f"{store.url}: {key}: {size} bytes where the manifest records {item.size}"
        )


def fetch_manifest(store: ObjectStore, ref: CheckpointRef) -> CheckpointManifest:
    """The manifest `ref` names, checked against its recorded sha256."""
    key = keys.manifest_key(ref.prefix)
    data = store.get_bytes(key, expected_sha256=ref.manifest_sha256)
    try:
        manifest = CheckpointManifest.model_validate_json(data)
    except ValidationError as exc:
        raise IntegrityError(f"{store.url}: {key}: not a valid manifest: {exc}") from exc
    for item in manifest.files:
        _check_relpath(item.path, f"{store.url}: {key}")
    return manifest


def verify_checkpoint(store: ObjectStore, ref: CheckpointRef) -> CheckpointManifest:
    """Manifest sha256 matches and every listed object exists with its recorded size.

    Cheap (no file content is read): enough to trust a checkpoint as a resume point, since
    every download verifies content sha256 anyway.
    """
    manifest = fetch_manifest(store, ref)
    parallel.each(lambda item: _check_size(store, ref.prefix, item), manifest.files)
    return manifest


def verify_claimed_checkpoint(
    store: ObjectStore, job_id: str, ref: CheckpointRef
) -> CheckpointManifest:
    """`verify_checkpoint` for a ref a worker reported for `job_id`: the prefix must be that
    job's `<epoch>-<seq>` folder and the manifest must agree on job, epoch, seq and step, so a
    report can never point the job at another job's checkpoint or at a seq it does not have.
    """
    expected = keys.checkpoint_prefix(job_id, ref.epoch, ref.seq)
    if ref.prefix != expected:
        raise IntegrityError(f"names {ref.prefix!r}, not {expected!r}")
    manifest = verify_checkpoint(store, ref)
    claimed = {"job_id": job_id, "epoch": ref.epoch, "seq": ref.seq, "step": ref.step}
    stored = {name: getattr(manifest, name) for name in claimed}
    differ = [
        f"{name} {stored[name]!r} (reported {claimed[name]!r})"
        for name in claimed
        if stored[name] != claimed[name]
    ]
    if differ:
        raise IntegrityError(f"{keys.manifest_key(ref.prefix)} records " + ", ".join(differ))
    return manifest


def download_checkpoint(
    store: ObjectStore,
    ref: CheckpointRef,
    dest: Path,
    progress: ProgressCallback | None = None,
) -> CheckpointManifest:
    """Download every file of `ref` into `dest`, each verified by sha256.

    Files land in a staging folder next to `dest` and move in only after all of them
    verified, so a failure leaves `dest` as it was.
    """
    manifest = fetch_manifest(store, ref)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    try:

        def fetch(item: ManifestFile) -> None:
            local = staging.joinpath(*PurePosixPath(item.path).parts)
            # sha256 covers the size too: a verified file is the file the manifest lists.
            store.get_file(
                ref.prefix + item.path, local, expected_sha256=item.sha256, progress=progress
            )

        parallel.each(fetch, manifest.files)
        dest.mkdir(parents=True, exist_ok=True)
        for item in manifest.files:
            parts = PurePosixPath(item.path).parts
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging.joinpath(*parts), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def list_checkpoints(store: ObjectStore, job_id: str) -> list[CheckpointRef]:
    """Checkpoints of `job_id` that have a readable manifest, newest (epoch, seq) first."""
    refs: list[CheckpointRef] = []
    for key in store.list_keys(keys.checkpoints_prefix(job_id)):
        if not key.endswith("/" + keys.MANIFEST_NAME):
            continue
        prefix = key[: -len(keys.MANIFEST_NAME)]
        parsed = keys.parse_checkpoint_prefix(prefix)
        if parsed is None or parsed[0] != job_id:
            continue
        with contextlib.suppress(ObjectNotFound):  # deleted while we listed
            data = store.get_bytes(key)
            try:
                manifest = CheckpointManifest.model_validate_json(data)
            except ValidationError:
                continue  # not a checkpoint we can resume from
            refs.append(
                CheckpointRef(
                    epoch=parsed[1],
                    seq=parsed[2],
                    step=manifest.step,
                    prefix=prefix,
                    manifest_sha256=sha256_bytes(data),
                )
            )
    refs.sort(key=lambda r: (r.epoch, r.seq), reverse=True)
    return refs


def delete_checkpoint(store: ObjectStore, ref: CheckpointRef) -> int:
    """Delete a checkpoint, manifest first so a half-deleted one never looks complete."""
    deleted = store.delete_prefix(keys.manifest_key(ref.prefix))
    return deleted + store.delete_prefix(ref.prefix)


def read_outputs_manifest(store: ObjectStore, job_id: str, epoch: int) -> OutputsManifest:
    """The epoch's outputs manifest as a restarted worker left it, or an empty one."""
    key = keys.manifest_key(keys.outputs_prefix(job_id, epoch))
    with contextlib.suppress(ObjectNotFound, ValidationError):
        return OutputsManifest.model_validate_json(store.get_bytes(key))
    return OutputsManifest(job_id=job_id, epoch=epoch)


def last_used_seq(store: ObjectStore, job_id: str, epoch: int) -> int:
    """The highest checkpoint seq of `epoch` in storage, 0 when none (one listing)."""
    highest = 0
    for key in store.list_keys(keys.checkpoints_prefix(job_id) + f"{epoch}-"):
        parsed = keys.parse_checkpoint_prefix(key.rsplit("/", 1)[0] + "/")
        if parsed and parsed[1] == epoch:
            highest = max(highest, parsed[2])
    return highest


class OutputsWriter:
    """The one writer of a segment's `jobs/<job>/outputs/<epoch>/`.

    Uploads batches of output files and rewrites `manifest.json` after each, listing every
    file so far with its sha256 (`relaymd jobs download` verifies against it). A worker that
    restarts within the same epoch picks up the manifest already there. Thread-safe: the
    background uploader and the segment's end both write through it.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        job_id: str,
        epoch: int,
        manifest: OutputsManifest | None = None,
    ) -> None:
        """`manifest`: the one `read_outputs_manifest` returned, when the caller read it
        already (while fetching other things); read here otherwise."""
        self._store = store
        self._prefix = keys.outputs_prefix(job_id, epoch)
        self._manifest_key = keys.manifest_key(self._prefix)
        self._lock = threading.Lock()
        self.manifest = (
            manifest if manifest is not None else read_outputs_manifest(store, job_id, epoch)
        )

    def upload(
        self, files: Sequence[tuple[str, Path]], progress: ProgressCallback | None = None
    ) -> list[ObjectRef]:
        _check_files(files, f"outputs {self._prefix}")  # refuses manifest.json too
        with self._lock:
            refs = parallel.each(
                lambda item: self._store.put_file(self._prefix + item[0], item[1], progress),
                list(files),
            )
            listed = {f.path: f for f in self.manifest.files}
            for (rel, _), ref in zip(files, refs, strict=True):
                listed[rel] = ManifestFile(path=rel, sha256=ref.sha256, size=ref.size)
            manifest = self.manifest.model_copy(
                update={
                    "files": sorted(listed.values(), key=lambda f: f.path),
                    "updated_at": utcnow(),
                }
            )
            self._store.put_bytes(self._manifest_key, manifest.model_dump_json().encode())
            self.manifest = manifest
        return refs
