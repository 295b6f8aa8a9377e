"""Replace an installed `relaymd` binary with a release's, verified, atomically, with rollback.

The release layout is what .github/workflows/release.yml publishes: a GitHub Release per tag
`vX.Y.Z` with assets `relaymd-linux-<machine>` and `SHA256SUMS` (`sha256sum` format). The
releases API is GitHub's (`<base>/latest`, `<base>/tags/<tag>`); the base URL is configurable
so that a mirror, a private fork or a test's local stand-in can serve it.

Nothing here knows about PyInstaller: callers pass the binary to replace (the CLI passes
`sys.executable` when frozen), so the whole update can be tested on a small script standing
in for the binary. The old binary stays untouched until the new one has been downloaded
completely, matched its SHA256 and run `--version`; the swap itself is one rename.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import platform
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from relaymd.logging import get_logger

log = get_logger(__name__)

DEFAULT_RELEASES_URL = "https://api.github.com/repos/relaymd/relaymd/releases"
RELEASES_URL_ENV = "RELAYMD_RELEASES_URL"
SUMS_ASSET = "SHA256SUMS"
BACKUP_SUFFIX = ".old"
HTTP_TIMEOUT_S = 30.0
CHUNK = 1 << 16
_VERSION_LINE = re.compile(r"^relaymd (\S+)\s*$", re.MULTILINE)
_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")

Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


class SelfUpdateError(Exception):
    """One message naming what failed and what to do; the binary was left as it was."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ReleaseAsset(BaseModel):
    name: str
    browser_download_url: str
    size: int | None = None


class Release(BaseModel):
    tag_name: str
    draft: bool = False
    prerelease: bool = False
    assets: list[ReleaseAsset] = Field(default_factory=list)

    @property
    def version(self) -> str:
        return self.tag_name.removeprefix("v")

    def asset(self, name: str) -> ReleaseAsset:
        for asset in self.assets:
            if asset.name == name:
                return asset
        raise SelfUpdateError(
            f"release {self.tag_name} has no asset {name!r} "
            f"(it has: {', '.join(a.name for a in self.assets) or 'none'})",
            hint="this platform may not be built for that release; see docs/deploy.md",
        )


class UpdateResult(BaseModel):
    """What `relaymd self-update` did; also its `--json` output."""

    action: str  # updated | up-to-date | available | rolled-back
    binary: Path
    current_version: str | None
    new_version: str | None = None
    backup: Path | None = None
    sha256: str | None = None
    asset: str | None = None


def releases_url(explicit: str | None = None) -> str:
    return (explicit or os.environ.get(RELEASES_URL_ENV) or DEFAULT_RELEASES_URL).rstrip("/")


def platform_asset_name(machine: str | None = None) -> str:
    """`relaymd-linux-x86_64` / `relaymd-linux-aarch64`: what the release workflow uploads."""
    arch = (machine or platform.machine()).lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)
    return f"relaymd-linux-{arch}"


def backup_path(binary: Path) -> Path:
    return binary.with_name(binary.name + BACKUP_SUFFIX)


def _open(url: str) -> http.client.HTTPResponse:
    request = urllib.request.Request(
        url, headers={"Accept": "application/vnd.github+json", "User-Agent": "relaymd"}
    )
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise SelfUpdateError(
                f"not found: {url}",
                hint=f"check the version (`relaymd self-update --check`) or {RELEASES_URL_ENV}",
            ) from None
        raise SelfUpdateError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SelfUpdateError(
            f"cannot reach {url}: {reason}",
            hint=f"check the network, or point {RELEASES_URL_ENV} at a reachable mirror",
        ) from None
    return response


def fetch_release(base_url: str, version: str | None = None) -> Release:
    """The newest published release, or the one tagged `v<version>`."""
    if version is None:
        url = f"{base_url}/latest"
    else:
        url = f"{base_url}/tags/v{version.removeprefix('v')}"
    with _open(url) as response:
        body = response.read()
    try:
        release = Release.model_validate_json(body)
    except ValidationError as exc:
        raise SelfUpdateError(
            f"{url} did not answer with a release: {exc.errors()[0]['msg']}",
            hint=f"is {RELEASES_URL_ENV} a GitHub-style releases API URL?",
        ) from None
    log.info("release_found", tag=release.tag_name, assets=len(release.assets))
    return release


def parse_sums(text: str) -> dict[str, str]:
    """`sha256sum` output: name -> lower-case hex digest."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        match = _SUMS_LINE.match(line.strip())
        if match:
            sums[match.group(2).strip()] = match.group(1).lower()
    return sums


def download(url: str, dest: Path, progress: Progress | None = None) -> str:
    """Stream `url` into `dest`, fsync it and return its SHA256; raise on a short body."""
    digest = hashlib.sha256()
    received = 0
    with _open(url) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with dest.open("wb") as out:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if progress is not None:
                        progress(received, total)
            except (http.client.IncompleteRead, OSError) as exc:
                raise SelfUpdateError(
                    f"download of {url} broke off after {received} bytes: {exc}",
                    hint="nothing was replaced; run the command again",
                ) from None
            out.flush()
            os.fsync(out.fileno())
    if total is not None and received != total:
        raise SelfUpdateError(
            f"download of {url} ended after {received} of {total} bytes",
            hint="nothing was replaced; run the command again",
        )
    return digest.hexdigest()


def binary_version(binary: Path) -> str | None:
    """What `<binary> --version` says (`relaymd X`), or None when it does not run."""
    try:
        result = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION_LINE.search(result.stdout)
    return match.group(1) if result.returncode == 0 and match else None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_copy(binary: Path, backup: Path) -> None:
    """Make `backup` the current `binary` (a hard link when possible), replacing any old one."""
    staging = backup.with_name(f".{backup.name}.{os.getpid()}")
    _link_or_copy(binary, staging)
    os.replace(staging, backup)


def _link_or_copy(source: Path, target: Path) -> None:
    """`target` becomes `source` too: a hard link when the filesystem allows, else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _writable_folder(binary: Path) -> None:
    if not os.access(binary.parent, os.W_OK):
        raise SelfUpdateError(
            f"cannot write to {binary.parent} (the folder of {binary})",
            hint="run it as the user who installed relaymd, or reinstall it where you can "
            "write (docs/deploy.md)",
        )


def install(binary: Path, new_file: Path) -> Path:
    """Swap `new_file` in as `binary` with one rename; the old binary becomes `<binary>.old`."""
    backup = backup_path(binary)
    new_file.chmod(binary.stat().st_mode & 0o7777 | 0o755)
    _keep_copy(binary, backup)
    log.info("binary_replacing", binary=str(binary), backup=str(backup))  # before: see above
    os.replace(new_file, binary)
    _fsync_dir(binary.parent)
    return backup


class StagedUpdate(BaseModel):
    """A verified download waiting beside the binary; `finish_update` swaps it in."""

    result: UpdateResult
    staged: Path | None = None  # None: nothing to install (up to date, or --check)


def prepare_update(
    binary: Path,
    *,
    base_url: str,
    version: str | None = None,
    check_only: bool = False,
    machine: str | None = None,
    progress: Progress | None = None,
) -> StagedUpdate:
    """Find the release, download its asset beside `binary` and verify it; change nothing."""
    current = binary_version(binary)
    release = fetch_release(base_url, version)
    name = platform_asset_name(machine)
    result = UpdateResult(
        action="up-to-date",
        binary=binary,
        current_version=current,
        new_version=release.version,
        asset=name,
    )
    if version is None and current == release.version:
        return StagedUpdate(result=result)
    if check_only:
        result.action = "available"
        return StagedUpdate(result=result)
    _writable_folder(binary)
    asset = release.asset(name)
    with _open(release.asset(SUMS_ASSET).browser_download_url) as response:
        sums = parse_sums(response.read().decode("utf-8", "replace"))
    expected = sums.get(name)
    if expected is None:
        raise SelfUpdateError(
            f"{SUMS_ASSET} of release {release.tag_name} lists no checksum for {name}",
            hint="the release is incomplete; report it, or pick another with --version",
        )
    staging = binary.with_name(f".{binary.name}.download-{os.getpid()}")
    try:
        actual = download(asset.browser_download_url, staging, progress)
        if actual != expected:
            raise SelfUpdateError(
                f"checksum mismatch for {name} of {release.tag_name}: "
                f"expected {expected}, downloaded {actual}",
                hint="nothing was replaced; run the command again, and report it if it repeats",
            )
        staging.chmod(0o755)
        if binary_version(staging) is None:
            raise SelfUpdateError(
                f"the downloaded {name} of {release.tag_name} does not run on this machine "
                "(`--version` failed)",
                hint="nothing was replaced; check the supported systems in docs/deploy.md",
            )
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    result.sha256 = actual
    return StagedUpdate(result=result, staged=staging)


def finish_update(staged: StagedUpdate) -> UpdateResult:
    """Swap the verified download in. A running onefile binary reads modules lazily from its
    own path, which now holds another file: the caller must need no new import after this."""
    result = staged.result
    if staged.staged is None:
        return result
    try:
        result.backup = install(result.binary, staged.staged)
    finally:
        staged.staged.unlink(missing_ok=True)
    result.action = "updated"
    return result


def rollback(binary: Path) -> UpdateResult:
    """Swap `binary` and `<binary>.old` back, so a second rollback undoes the first.
    Like `finish_update`, the caller must need no new import afterwards."""
    backup = backup_path(binary)
    if not backup.is_file():
        raise SelfUpdateError(
            f"no previous binary to roll back to: {backup} does not exist",
            hint="rollback works after a `relaymd self-update`; or install a release by hand "
            "(docs/deploy.md)",
        )
    _writable_folder(binary)
    previous = binary_version(backup)
    current = binary_version(binary)
    staging = binary.with_name(f".{binary.name}.rollback-{os.getpid()}")
    _link_or_copy(binary, staging)
    log.info("binary_rolling_back", binary=str(binary), version=previous)
    os.replace(backup, binary)  # the one rename that matters: `binary` is never missing
    os.replace(staging, backup)
    _fsync_dir(binary.parent)
    return UpdateResult(
        action="rolled-back",
        binary=binary,
        current_version=current,
        new_version=previous,
        backup=backup,
    )
