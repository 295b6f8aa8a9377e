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

from relaymd.assemble import AssembledOutputs
from relaymd.cli.errors import CliError, ExitCode
from relaymd.models import CheckpointManifest, CheckpointRef, Job, OutputsManifest
from relaymd.storage import keys

if TYPE_CHECKING:
    from relaymd.storage.base import ObjectStore


class DownloadResult(BaseModel):
    job_id: str
    destination: Path
    files: list[Path] = Field(default_factory=list)
    verified: int = 0  # files whose sha256 was checked
    skipped: int = 0  # already there with the manifest's sha256: not fetched again
    checkpoint_dir: Path | None = None
    assembled: AssembledOutputs | None = None


def _safe_join(base: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or ".." in parts:
        raise CliError(f"refusing to write outside {base}: object path {relative!r}")
    return base.joinpath(*parts)


class _Planned(BaseModel):
    key: str
    local: Path
    sha256: str | None = None  # expected; None when the manifest does not list the file yet
    size: int | None = None


def _manifest_files(store: ObjectStore, prefix: str) -> dict[str, tuple[str, int]]:
    """path -> (sha256, size) from `prefix/manifest.json`, if present and readable."""
    from relaymd.storage.base import ObjectNotFound

    try:
        manifest = OutputsManifest.model_validate_json(store.get_bytes(keys.manifest_key(prefix)))
    except (ObjectNotFound, ValidationError):
        return {}
    return {f.path: (f.sha256, f.size) for f in manifest.files}


def _already_there(item: _Planned) -> bool:
    """A local file that already has the expected sha256 needs no download."""
    from relaymd.storage.hashing import sha256_file

    if item.sha256 is None or not item.local.is_file():
        return False
    if item.size is not None and item.local.stat().st_size != item.size:
        return False
    return sha256_file(item.local) == item.sha256


def download_job(
    job: Job,
    store: ObjectStore,
    dest: Path,
    *,
    outputs: bool = True,
    checkpoint: bool = True,
    show_progress: bool = True,
    assemble: bool = False,
    xtc: bool = False,
) -> DownloadResult:
    """Fetch into `dest`; files already there with the right sha256 are kept, not fetched.
    `assemble` then joins the chunks (relaymd.assemble) into `dest/assembled/`."""
    result = DownloadResult(job_id=job.id, destination=dest)
    plan = _plan_outputs(job, store, dest) if outputs else []
    stage = None
    if checkpoint and job.checkpoint is not None:
        stage = _CheckpointStage.read(job.id, job.checkpoint, store, dest)
    try:
        if stage is not None:
            plan += stage.plan()
            result.checkpoint_dir = stage.final_dir
        _fetch_plan(job, store, plan, result, show_progress)
        if stage is not None:
            result.files = stage.publish(result.files)
    finally:
        if stage is not None:
            stage.discard()
    if assemble:
        result.assembled = _assemble(job, store, dest, xtc)
    return result


def _plan_outputs(job: Job, store: ObjectStore, dest: Path) -> list[_Planned]:
    """Every output object of the job, to DEST/outputs/<epoch>/..., with the sha256 and size
    its segment's manifest lists (none for files the worker has not listed yet)."""
    out_root = keys.job_prefix(job.id) + "outputs/"
    by_prefix: dict[str, dict[str, tuple[str, int]]] = {}
    plan: list[_Planned] = []
    for key in store.list_keys(out_root):
        relative = key[len(out_root) :]
        epoch, _, inner = relative.partition("/")
        if not inner or inner == keys.MANIFEST_NAME:
            continue
        prefix = f"{out_root}{epoch}/"
        listed = by_prefix.setdefault(prefix, _manifest_files(store, prefix))
        sha, size = listed.get(inner, (None, None))
        plan.append(
            _Planned(key=key, local=_safe_join(dest / "outputs", relative), sha256=sha, size=size)
        )
    return plan


class _CheckpointStage:
    """The one place the checkpoint lands: fetched into a hidden `.<epoch>-<seq>.partial-*`
    folder beside DEST/checkpoint/<epoch>-<seq>/, which it replaces in one rename once every
    file arrived (its manifest last); removed on any failure."""

    def __init__(
        self, prefix: str, manifest: CheckpointManifest, manifest_bytes: bytes, final_dir: Path
    ) -> None:
        self.prefix = prefix  # of the checkpoint's objects in storage
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.final_dir = final_dir
        self.staging: Path | None = None

    @classmethod
    def read(
        cls, job_id: str, ref: CheckpointRef, store: ObjectStore, dest: Path
    ) -> _CheckpointStage:
        """The checkpoint's manifest, checked against the sha256 the daemon recorded."""
        from relaymd.storage.base import StorageError

        try:
            data = store.get_bytes(
                keys.manifest_key(ref.prefix), expected_sha256=ref.manifest_sha256
            )
            manifest = CheckpointManifest.model_validate_json(data)
        except (StorageError, ValidationError) as exc:
            raise CliError(
                f"checkpoint {ref.epoch}-{ref.seq} of job {job_id}: cannot read its manifest: "
                f"{exc}",
                hint="`relaymd clusters test <cluster>` checks storage; a sha256 mismatch means "
                "the object was replaced or corrupted (`--no-checkpoint` fetches the outputs)",
            ) from None
        return cls(ref.prefix, manifest, data, dest / "checkpoint" / f"{ref.epoch}-{ref.seq}")

    def plan(self) -> list[_Planned]:
        """The checkpoint's files, into the staging folder; a verified copy from an earlier
        download is hard-linked there instead of fetched again."""
        self.final_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(dir=self.final_dir.parent, prefix=f".{self.final_dir.name}.partial-")
        )
        self.staging = staging
        plan = []
        for item in self.manifest.files:
            planned = _Planned(
                key=self.prefix + item.path,
                local=_safe_join(staging, item.path),
                sha256=item.sha256,
                size=item.size,
            )
            kept = planned.model_copy(update={"local": _safe_join(self.final_dir, item.path)})
            if _already_there(kept):
                planned.local.parent.mkdir(parents=True, exist_ok=True)
                os.link(kept.local, planned.local)
            plan.append(planned)
        return plan

    def publish(self, files: list[Path]) -> list[Path]:
        """Write the manifest, then swap the whole folder into place; `files` renamed to match."""
        staging = self.staging
        assert staging is not None, "plan() first"
        (staging / keys.MANIFEST_NAME).write_bytes(self.manifest_bytes)
        if self.final_dir.exists():
            shutil.rmtree(self.final_dir)
        os.replace(staging, self.final_dir)
        return [
            self.final_dir / f.relative_to(staging) if f.is_relative_to(staging) else f
            for f in files
        ]

    def discard(self) -> None:
        if self.staging is not None and self.staging.exists():
            shutil.rmtree(self.staging, ignore_errors=True)


def _fetch_plan(
    job: Job,
    store: ObjectStore,
    plan: list[_Planned],
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
    todo: list[_Planned] = []
    for planned in plan:
        if _already_there(planned):
            result.files.append(planned.local)
            result.verified += 1
            result.skipped += 1
        else:
            todo.append(planned)
    progress = transfer_progress(show_progress)
    with progress:
        task = progress.add_task(f"download {job.id}", total=_total_bytes(store, todo))
        for want in todo:
            want.local.parent.mkdir(parents=True, exist_ok=True)
            try:
                store.get_file(
                    want.key,
                    want.local,
                    expected_sha256=want.sha256,
                    progress=lambda n: progress.advance(task, n),
                )
            except StorageError as exc:
                raise CliError(f"{want.key}: download failed: {exc}") from None
            result.files.append(want.local)
            result.verified += want.sha256 is not None


def _total_bytes(store: ObjectStore, todo: list[_Planned]) -> int | None:
    """Bytes to fetch, so the bar shows how far it is; None (an open bar) if unknown."""
    from relaymd.storage.base import StorageError

    total = 0
    for want in todo:
        if want.size is None:
            try:
                want.size = store.size(want.key)
            except StorageError:
                return None
        total += want.size
    return total


def _fetch_topology(job: Job, store: ObjectStore, target: Path) -> Path | None:
    """The job's topology PDB (`engine.topology` or `engine.pdb`) out of its verified input
    bundle, so the assembled trajectory loads with `top=assembled/topology.pdb`."""
    import tarfile
    import tempfile

    from relaymd.models import OpenMMSettings
    from relaymd.storage.base import StorageError

    engine = job.spec.engine
    name = (engine.topology or engine.pdb) if isinstance(engine, OpenMMSettings) else None
    if name is None:
        return None
    wanted = PurePosixPath(name)
    with tempfile.TemporaryDirectory(prefix="relaymd-bundle-") as tmp:
        archive = Path(tmp) / "bundle.tar.gz"
        try:
            store.get_file(job.bundle.key, archive, expected_sha256=job.bundle.sha256)
        except StorageError as exc:
            raise CliError(f"job {job.id}: cannot fetch its input bundle: {exc}") from None
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                if member.isfile() and PurePosixPath(member.name) == wanted:
                    source = tar.extractfile(member)
                    if source is None:
                        return None
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with source:
                        target.write_bytes(source.read())
                    return target
    return None


def _assemble(job: Job, store: ObjectStore, dest: Path, xtc: bool) -> AssembledOutputs:
    from relaymd.assemble import ASSEMBLED_DIR, TOPOLOGY, AssembleError, assemble_outputs

    topology = _fetch_topology(job, store, dest / ASSEMBLED_DIR / TOPOLOGY)
    try:
        return assemble_outputs(dest, xtc=xtc, topology=topology, through_step=job.step)
    except AssembleError as exc:
        raise CliError(
            f"cannot assemble {dest}: {exc}", hint="the downloaded chunks are kept as they are"
        ) from None
