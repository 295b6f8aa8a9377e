"""One job directory validated and scanned: everything known before the upload starts."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from pydantic import BaseModel, Field

from relaymd.config import LoadedConfig
from relaymd.logging import get_logger
from relaymd.models import CommandSettings, JobSpec
from relaymd.submission.checks import (
    check_atom_config,
    output_warnings,
    required_inputs,
    validate_job,
)
from relaymd.submission.errors import SubmitError
from relaymd.submission.spec import SpecOverrides, build_spec

log = get_logger(__name__)


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
        check_atom_config(directory, spec.engine)
        warnings = output_warnings(spec.engine)
    try:
        # Every file packable, no link leaving the directory unless allowed, and within the
        # worker's size limits: all before anything is uploaded.
        scanned = scan_job_folder(directory, follow_external_links=follow_external_links)
    except BundleError as exc:
        raise SubmitError(f"{directory}: cannot pack the job directory: {exc}") from None
    rules = IgnoreRules.of_folder(directory)
    for field, name in required_inputs(spec):
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
