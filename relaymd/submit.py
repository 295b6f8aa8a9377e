"""Submit a job: build and validate its spec, pack, upload, verify, THEN register.

Order matters (nothing half-written): a job row exists only for a bundle that was read back
from storage with the right sha256. Any failure after the upload deletes the object again, so
a failed submit leaves neither a job row nor a stray bundle.

Used by `relaymd submit`, `relaymd demo` and tests. The slow part (pack + upload + verify) is
thread-safe and runs in parallel for several directories; registration runs in the caller's
thread because the state store is a single SQLite connection.
"""

from __future__ import annotations

import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from relaymd.atom_config import AtomConfigError, load_atom_layout
from relaymd.config import LoadedConfig
from relaymd.ids import new_job_id
from relaymd.logging import get_logger
from relaymd.models import (
    CommandSettings,
    Job,
    JobSpec,
    JobState,
    ObjectRef,
    OpenMMSettings,
)
from relaymd.storage import keys
from relaymd.storage.base import TransferCancelled

if TYPE_CHECKING:
    from relaymd.state import StateStore
    from relaymd.storage.base import ObjectStore

log = get_logger(__name__)

SPEC_FILE = "relaymd.yaml"

# Called with (directory, bytes moved since the last call, total bytes of the bundle).
UploadProgress = Callable[[Path, int, int], None]


class SubmitError(Exception):
    """A problem with one job directory; the message names the directory/file and field."""

    def __init__(self, message: str, *, kind: str = "invalid") -> None:
        super().__init__(message)
        # "invalid" (usage: fix the spec), "missing" (a path does not exist), "storage".
        self.kind = kind


class SpecOverrides(BaseModel):
    """Command-line flags; a set field replaces the value from relaymd.yaml."""

    engine: str | None = None
    command: str | None = None
    checkpoint_globs: list[str] = Field(default_factory=list)
    steps: int | None = None
    gpus: int | None = None
    min_vram_gib: float | None = None
    clusters: list[str] = Field(default_factory=list)
    title: str | None = None
    priority: int | None = None
    max_retries: int | None = None
    image: str | None = None
    checkpoint_interval_s: float | None = None


class ExternalLink(BaseModel):
    """A symlink of the job directory that points outside it (packed only when allowed)."""

    link: Path
    target: Path


class PreparedJob(BaseModel):
    """A validated job waiting for upload."""

    directory: Path
    spec: JobSpec
    # Things the user should know but that do not stop the submit (printed to stderr).
    warnings: list[str] = Field(default_factory=list)
    follow_external_links: bool = False
    external_links: list[ExternalLink] = Field(default_factory=list)
    # What .relaymdignore leaves out of the bundle (folders end in "/").
    left_out: list[str] = Field(default_factory=list)


class SubmitInterrupted(TransferCancelled):
    """Ctrl-C arrived: uploads stopped, their objects were removed, nothing was registered."""


class UploadedJob(BaseModel):
    job_id: str
    directory: Path
    spec: JobSpec
    bundle: ObjectRef


class SubmitResult(BaseModel):
    job_id: str | None  # None for --dry-run
    directory: Path
    title: str
    bundle: ObjectRef | None = None
    dry_run: bool = False


def _format_spec_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid job spec"]
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against docs/configuration.md"
        lines.append(f"  {loc or '(top level)'}: {message}")
    return "\n".join(lines)


def _read_spec_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except PermissionError:
        raise SubmitError(f"{path}: cannot read the job spec (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise SubmitError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save the file as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SubmitError(f"{path}:{where}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SubmitError(f"{path}: expected a mapping (title:, engine:, ...) at the top level")
    return data


def _apply_overrides(data: dict[str, Any], flags: SpecOverrides, directory: Path) -> None:
    engine: dict[str, Any] = dict(data.get("engine") or {})
    if flags.engine is not None and engine.get("kind") != flags.engine:
        engine = {"kind": flags.engine}
    if flags.command is not None:
        engine.setdefault("kind", "command")
        engine["command"] = flags.command
    if flags.checkpoint_globs:
        engine["checkpoint_globs"] = list(flags.checkpoint_globs)
    if flags.steps is not None:
        engine.setdefault("kind", "openmm")
        engine["total_steps"] = flags.steps
    if engine:
        engine.setdefault("kind", "openmm")
        data["engine"] = engine
    if flags.title is not None:
        data["title"] = flags.title
    data.setdefault("title", directory.resolve().name)
    resources: dict[str, Any] = dict(data.get("resources") or {})
    if flags.gpus is not None:
        resources["gpus"] = flags.gpus
    if flags.min_vram_gib is not None:
        resources["min_vram_gib"] = flags.min_vram_gib
    if resources:
        data["resources"] = resources
    if flags.clusters:
        placement: dict[str, Any] = dict(data.get("placement") or {})
        placement["allowed_clusters"] = list(flags.clusters)
        data["placement"] = placement
    for name in ("priority", "max_retries", "image", "checkpoint_interval_s"):
        value = getattr(flags, name)
        if value is not None:
            data[name] = value


def build_spec(directory: Path, flags: SpecOverrides | None = None) -> JobSpec:
    """The job spec from DIR/relaymd.yaml (if any) with flags applied on top."""
    flags = flags or SpecOverrides()
    if not directory.exists():
        raise SubmitError(f"{directory}: no such directory", kind="missing")
    if not directory.is_dir():
        raise SubmitError(f"{directory}: not a directory (give the job's input folder)")
    spec_path = directory / SPEC_FILE
    data = _read_spec_file(spec_path) if spec_path.is_file() else {}
    _apply_overrides(data, flags, directory)
    if "engine" not in data:
        raise SubmitError(
            f"{spec_path}: engine: missing; write a {SPEC_FILE} or pass --engine/--steps/--command"
        )
    source = str(spec_path) if spec_path.is_file() else f"{directory} (flags)"
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SubmitError(_format_spec_error(source, exc)) from None


def _required_inputs(spec: JobSpec) -> list[tuple[str, str]]:
    """(field, relative path) pairs the engine needs inside the bundle."""
    engine = spec.engine
    if isinstance(engine, OpenMMSettings):
        if engine.pdb is not None:
            # Force fields may be OpenMM's built-ins (amber14-all.xml), so only local
            # files that look like paths are required.
            wanted = [("engine.pdb", engine.pdb)]
            return wanted
        return [
            (f"engine.{name}", value)
            for name, value in (
                ("system", engine.system),
                ("state", engine.state),
                ("integrator", engine.integrator),
            )
            if value is not None
        ]
    assert isinstance(engine, CommandSettings)
    config = engine.atom_config_path()
    return [("engine.atom_config", config)] if config is not None else []


def _check_atom_config(directory: Path, engine: CommandSettings) -> None:
    """Preset atom cuts sample files by keys of the AToM config: refuse a job without them."""
    if engine.preset != "atom":
        return
    config = engine.atom_config_path()
    if config is None:
        raise SubmitError(
            f"{directory / SPEC_FILE}: engine.command: preset atom needs the AToM config file "
            "as an argument (a .cntl, .yaml, .yml or .json path in the job directory) or "
            "engine.atom_config"
        )
    try:
        load_atom_layout(directory / config)
    except AtomConfigError as exc:
        raise SubmitError(f"{directory / SPEC_FILE}: engine.atom_config: {exc}") from None


def output_warnings(engine: CommandSettings) -> list[str]:
    """Outputs a relay cannot keep exactly consistent with the checkpoints of this spec."""
    if engine.preset == "atom" or engine.output_line_counts is not None:
        return []
    globs = [*engine.progress_globs, *engine.output_globs]
    loose = [g for g in globs if g not in engine.checkpoint_globs]
    if not loose:
        return []
    names = ", ".join(dict.fromkeys(loose))
    return [
        f"engine: outputs {names} are not exact after a hard kill: they are stored as they "
        "were when a checkpoint was taken and may hold lines written after it, which the "
        "resumed program writes again. Set engine.output_line_counts (a file the program "
        "writes in each checkpoint round) or write them only during the round and list them "
        "in checkpoint_globs (docs/job-lifecycle.md, 'Outputs and checkpoints')"
    ]


def validate_job(directory: Path, spec: JobSpec, loaded: LoadedConfig) -> None:
    """Everything checkable before a byte is uploaded: inputs present, clusters and image known."""
    for field, relative in _required_inputs(spec):
        candidate = directory / relative
        if not candidate.is_file():
            raise SubmitError(
                f"{directory / SPEC_FILE}: {field}: input file {relative!r} "
                f"not found in {directory}",
                kind="missing",
            )
    known = {c.name: c for c in loaded.clusters}
    named = [*spec.placement.allowed_clusters, *spec.placement.preferred_clusters]
    unknown = [name for name in named if name not in known]
    if unknown:
        raise SubmitError(
            f"{directory}: placement: unknown cluster(s) {', '.join(unknown)}; "
            f"configured clusters: {', '.join(known) or '(none)'}"
        )
    candidates = [known[n] for n in spec.placement.allowed_clusters] or list(known.values())
    runnable = [c for c in candidates if c.native_worker is not None or spec.image in c.images]
    if not runnable:
        raise SubmitError(
            f"{directory}: image: no allowed cluster has the worker image {spec.image!r}; "
            f"add it under `images:` of a cluster profile"
        )
    if spec.resources.gpus > 0:
        fits = [
            c
            for c in runnable
            if any(p.gpus_per_allocation >= spec.resources.gpus for p in c.partitions)
        ]
        if not fits:
            raise SubmitError(
                f"{directory}: resources.gpus: no allowed cluster has a partition with "
                f"{spec.resources.gpus} GPU(s) per allocation (use --gpus 0 for a CPU job)"
            )


def prepare(
    directory: Path,
    loaded: LoadedConfig,
    flags: SpecOverrides | None = None,
    *,
    spec: JobSpec | None = None,
    follow_external_links: bool = False,
) -> PreparedJob:
    """Validate one job directory; `spec` (Python API) replaces DIR/relaymd.yaml and flags."""
    from relaymd.storage.bundle import BundleError, scan_job_folder
    from relaymd.storage.ignore import IGNORE_FILE, IgnoreRules

    spec = spec or build_spec(directory, flags)
    validate_job(directory, spec, loaded)
    warnings: list[str] = []
    if isinstance(spec.engine, CommandSettings):
        _check_atom_config(directory, spec.engine)
        warnings = output_warnings(spec.engine)
    try:
        # Every file packable, no link leaving the directory unless allowed, and within the
        # worker's size limits: all before anything is uploaded.
        scanned = scan_job_folder(directory, follow_external_links=follow_external_links)
    except BundleError as exc:
        raise SubmitError(f"{directory}: cannot pack the job directory: {exc}") from None
    rules = IgnoreRules.of_folder(directory)
    for field, name in _required_inputs(spec):
        parts = PurePosixPath(name).parts
        # The file or any folder above it: an ignored folder takes its contents with it.
        if any(
            rules.ignored("/".join(parts[: i + 1]), i + 1 < len(parts)) for i in range(len(parts))
        ):
            raise SubmitError(
                f"{directory / IGNORE_FILE}: leaves out {name}, which {field} needs; "
                "remove or narrow that pattern"
            )
    external = [
        ExternalLink(link=e.path, target=e.external_target)
        for e in scanned.entries
        if e.external_target is not None
    ]
    for item in external:
        log.warning("external_link_packed", link=str(item.link), target=str(item.target))
    return PreparedJob(
        directory=directory,
        spec=spec,
        follow_external_links=follow_external_links,
        external_links=external,
        warnings=warnings,
        left_out=scanned.left_out,
    )


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
            _remove_quietly(store, key)
            if cancel.is_set():
                raise SubmitInterrupted(f"{job.directory}: submit interrupted") from None
            if isinstance(exc, StorageError):
                raise SubmitError(
                    f"{job.directory}: upload to {store.url} failed: {exc}", kind="storage"
                ) from exc
            raise
    log.info("bundle_uploaded", job_id=job_id, key=key, size=ref.size, sha256=ref.sha256)
    return UploadedJob(job_id=job_id, directory=job.directory, spec=job.spec, bundle=ref)


def _remove_quietly(store: ObjectStore, key: str) -> None:
    try:
        store.delete_prefix(key)
    except Exception as exc:  # the original error matters more than a failed cleanup
        log.warning("bundle_cleanup_failed", key=key, error=str(exc))


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
        _remove_quietly(store, uploaded.bundle.key)
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
        outcomes: list[UploadedJob | SubmitError] = []
        for item, future in zip(prepared, futures, strict=True):
            try:
                outcomes.append(future.result())
            except SubmitError as exc:
                outcomes.append(exc)
            except SubmitInterrupted:
                raise
            except Exception as exc:  # one directory's surprise must not strand the others
                log.exception("submit_failed", directory=str(item.directory))
                outcomes.append(
                    SubmitError(f"{item.directory}: {type(exc).__name__}: {exc}", kind="storage")
                )
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
                    _remove_quietly(store, keys.bundle_key(job_id))
        log.warning("submit_interrupted", registered=len(registered))
        raise SubmitInterrupted(
            f"submit interrupted: {len(registered)} job(s) registered before Ctrl-C; "
            "every other upload was stopped and removed"
        ) from None


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
