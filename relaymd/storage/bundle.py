"""Job input bundles: a deterministic tar.gz in, a safe extraction out.

Packing the same directory twice gives the same bytes (sorted members, zeroed times and
owners, no gzip timestamp), so a bundle's sha256 names its content. Extraction trusts
nothing in the archive: absolute paths, `..`, links that could leave the tree, device
files and oversized members are refused with the member and the reason named.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO

from pydantic import BaseModel, Field

from relaymd.storage.base import StorageError
from relaymd.storage.hashing import CHUNK_SIZE, sha256_file
from relaymd.storage.ignore import IGNORE_FILE, IgnoreRules

GIB = 1 << 30
# What a worker's extract_bundle accepts; submit refuses more before uploading anything.
MAX_MEMBER_BYTES = 8 * GIB
MAX_TOTAL_BYTES = 32 * GIB


class BundleError(StorageError):
    """A bundle could not be packed or extracted (a problem of the files, not of storage)."""


class UnsafeBundleError(BundleError):
    """The archive holds a member that could write outside the destination, or too much."""


class PackingInterrupted(BundleError):
    """Packing was asked to stop (Ctrl-C during submit)."""


class _Watched(io.RawIOBase):
    """A file whose reads stop with PackingInterrupted once `interrupted()` says so, so a
    multi-gigabyte file stops being packed within one chunk."""

    def __init__(self, fh: IO[bytes], interrupted: Callable[[], bool]) -> None:
        self._fh = fh
        self._interrupted = interrupted

    def read(self, size: int = -1) -> bytes:
        if self._interrupted():
            raise PackingInterrupted("packing interrupted")
        return self._fh.read(size)

    def readable(self) -> bool:
        return True


class PackedBundle(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    files: int = Field(ge=0)


def _walk_sorted(
    root: Path,
    rules: IgnoreRules | None = None,
    left_out: list[str] | None = None,
    top: Path | None = None,
) -> list[Path]:
    """Every entry below `root`, parents before children, in a fixed (byte-wise) order;
    entries `rules` ignore are skipped (an ignored folder is not read) and named in `left_out`."""
    top = top or root
    found: list[Path] = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name.encode()):
        path = Path(entry.path)
        is_dir = entry.is_dir(follow_symlinks=False)
        if rules is not None and rules.ignored(path.relative_to(top).as_posix(), is_dir):
            if left_out is not None:
                left_out.append(path.relative_to(top).as_posix() + ("/" if is_dir else ""))
            continue
        found.append(path)
        if is_dir:
            found.extend(_walk_sorted(path, rules, left_out, top))
    return found


def _normalised(info: tarfile.TarInfo, mode: int) -> tarfile.TarInfo:
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class BundleEntry(BaseModel):
    name: str  # POSIX path inside the bundle
    path: Path  # where it is read from (symlinks to files already resolved)
    is_dir: bool
    executable: bool = False
    size: int = 0
    # Set for a symlink that resolves outside the job directory (packed only when allowed).
    external_target: Path | None = None


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def _check_link(path: Path, root: Path, follow_external: bool) -> Path | None:
    """The target of a link that leaves `root` (None when it stays inside).

    Refused unless `follow_external`: a link to ~/.ssh/id_ed25519 must never be shipped to
    a bucket and every worker node just because it sits in a job directory.
    """
    target = path.resolve()
    if target.is_relative_to(root):
        return None
    if not follow_external:
        raise BundleError(
            f"{path}: symlink to {target}, outside the job directory; copy the file in, "
            "or pass --follow-external-links to pack what it points to"
        )
    return target


class ScannedFolder(BaseModel):
    entries: list[BundleEntry]
    left_out: list[str]  # what .relaymdignore leaves out (folders end in "/"), in walk order


def scan_bundle(source_dir: Path, *, follow_external_links: bool = False) -> list[BundleEntry]:
    """Every entry `pack_bundle` would store, in order, each one checked."""
    return scan_job_folder(source_dir, follow_external_links=follow_external_links).entries


def scan_job_folder(
    source_dir: Path,
    *,
    follow_external_links: bool = False,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> ScannedFolder:
    """Every entry `pack_bundle` would store, in order, each one checked, and what the
    folder's `.relaymdignore` leaves out (never read, so never checked).

    Symlinks to files count as the file they point to (a worker has no access to the link's
    target); a link that resolves outside `source_dir` is refused unless
    `follow_external_links`. A broken link, a link to a directory, an unreadable file, a file
    or a total over the worker's extraction limits, or anything that is not a file or
    directory raises BundleError naming it: never silently left out. Cheap enough to run
    before any upload starts (it reads no file content).
    """
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise BundleError(f"{source_dir}: not a directory")
    root = source_dir.resolve()
    entries: list[BundleEntry] = []
    total = 0
    left_out: list[str] = []
    try:
        rules = IgnoreRules.of_folder(source_dir)
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{source_dir / IGNORE_FILE}: cannot read: {exc}") from exc
    for path in _walk_sorted(source_dir, rules, left_out):
        name = path.relative_to(source_dir).as_posix()
        st = path.lstat()
        external: Path | None = None
        if stat.S_ISLNK(st.st_mode):
            try:
                st = path.stat()
            except OSError as exc:
                raise BundleError(f"{path}: broken symlink ({exc.strerror})") from exc
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(
                    f"{path}: symlink to something other than a file; copy the "
                    "directory in instead of linking it"
                )
            external = _check_link(path, root, follow_external_links)
        if stat.S_ISDIR(st.st_mode):
            entries.append(BundleEntry(name=name, path=path, is_dir=True))
        elif stat.S_ISREG(st.st_mode):
            if not os.access(path, os.R_OK):
                raise BundleError(f"{path}: not readable (permission denied); fix its mode")
            if st.st_size > max_member_bytes:
                raise BundleError(
                    f"{path}: {_gib(st.st_size)}, over the worker's limit of "
                    f"{_gib(max_member_bytes)} per file; split it or leave it out of the job"
                )
            total += st.st_size
            if total > max_total_bytes:
                raise BundleError(
                    f"{source_dir}: the files add up to more than the worker's limit of "
                    f"{_gib(max_total_bytes)} in total (reached at {path}); leave large "
                    "files out of the job directory"
                )
            executable = bool(st.st_mode & 0o100)
            entries.append(
                BundleEntry(
                    name=name,
                    path=path,
                    is_dir=False,
                    executable=executable,
                    size=st.st_size,
                    external_target=external,
                )
            )
        else:
            raise BundleError(
                f"{path}: not a regular file or directory; remove it or list it in {IGNORE_FILE}"
            )
    return ScannedFolder(entries=entries, left_out=left_out)


def pack_bundle(
    source_dir: Path,
    dest: Path,
    *,
    follow_external_links: bool = False,
    interrupted: Callable[[], bool] | None = None,
) -> PackedBundle:
    """Pack `source_dir` (as `scan_bundle` sees it) into the deterministic tar.gz `dest`.

    `interrupted` is asked between chunks; when it says so, packing stops with
    PackingInterrupted (the caller removes `dest`).
    """
    source_dir = Path(source_dir)
    dest = Path(dest)
    if dest.resolve().is_relative_to(source_dir.resolve()):
        raise BundleError(f"{dest}: the bundle cannot be written inside {source_dir}")
    entries = scan_bundle(source_dir, follow_external_links=follow_external_links)
    count = 0
    with (
        open(dest, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for entry in entries:
            if entry.is_dir:
                info = _normalised(tarfile.TarInfo(entry.name), 0o755)
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info = _normalised(tarfile.TarInfo(entry.name), 0o755 if entry.executable else 0o644)
            try:
                with open(entry.path, "rb") as fh:
                    info.size = os.fstat(fh.fileno()).st_size
                    source: IO[bytes] | _Watched = (
                        fh if interrupted is None else _Watched(fh, interrupted)
                    )
                    tar.addfile(info, source)
            except OSError as exc:
                raise BundleError(f"{entry.path}: cannot read ({exc.strerror})") from exc
            count += 1
    return PackedBundle(sha256=sha256_file(dest), size=dest.stat().st_size, files=count)


def _member_path(name: str, member: str, what: str = "path") -> PurePosixPath | None:
    """The safe relative path of an archive name; None for the archive root itself."""
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeBundleError(f"bundle member {member!r}: absolute {what} {name!r}")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise UnsafeBundleError(f"bundle member {member!r}: {what} {name!r} contains '..'")
    return path if path.parts else None


def _check_member(
    member: tarfile.TarInfo, seen: set[str], files: set[str], max_member_bytes: int
) -> PurePosixPath | None:
    rel = _member_path(member.name, member.name)
    if rel is None:
        if member.isdir():
            return None
        raise UnsafeBundleError(f"bundle member {member.name!r}: empty path")
    key = rel.as_posix()
    if key in seen:
        raise UnsafeBundleError(f"bundle member {member.name!r}: listed twice")
    if member.issym():
        # Relative and without '..': the link then resolves below its own folder, whatever
        # other links in the tree do, so it can never lead outside.
        _member_path(member.linkname, member.name, "symlink target")
        if not member.linkname:
            raise UnsafeBundleError(f"bundle member {member.name!r}: empty symlink target")
    elif member.islnk():
        target = _member_path(member.linkname, member.name, "hardlink target")
        if target is None or target.as_posix() not in files:
            raise UnsafeBundleError(
                f"bundle member {member.name!r}: hardlink to {member.linkname!r}, "
                "which is not an earlier file of the bundle"
            )
    elif member.isfile():
        if member.size > max_member_bytes:
            raise UnsafeBundleError(
                f"bundle member {member.name!r}: {member.size} bytes, over the "
                f"{max_member_bytes}-byte limit per member"
            )
    elif not member.isdir():
        raise UnsafeBundleError(
            f"bundle member {member.name!r}: device, FIFO or other special file"
        )
    return rel


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, target: Path) -> None:
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if member.issym():
        os.symlink(member.linkname, target)
    elif member.islnk():
        os.link(root / member.linkname, target, follow_symlinks=False)
    else:
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - isfile() members always have data
            raise UnsafeBundleError(f"bundle member {member.name!r}: no data")
        mode = 0o755 if member.mode & 0o100 else 0o644
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as out, source:
            shutil.copyfileobj(source, out, CHUNK_SIZE)


def extract_bundle(
    archive: Path,
    dest: Path,
    *,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
) -> list[Path]:
    """Extract `archive` into `dest` (absent or empty); returns every extracted path.

    Members land in a staging folder next to `dest` that becomes `dest` only when the whole
    archive extracted, so a refused bundle leaves nothing behind.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BundleError(f"{dest}: extraction needs an absent or empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.extract-"))
    staging.chmod(0o755)
    relpaths: list[PurePosixPath] = []
    try:
        seen: set[str] = set()
        files: set[str] = set()
        total = 0
        try:
            with tarfile.open(archive, mode="r:*") as tar:
                for member in tar:
                    rel = _check_member(member, seen, files, max_member_bytes)
                    if rel is None:
                        continue
                    total += member.size if member.isfile() else 0
                    if total > max_total_bytes:
                        raise UnsafeBundleError(
                            f"bundle member {member.name!r}: the bundle exceeds the "
                            f"{max_total_bytes}-byte limit in total"
                        )
                    seen.add(rel.as_posix())
                    if member.isfile():
                        files.add(rel.as_posix())
                    _write_member(tar, member, staging, staging.joinpath(*rel.parts))
                    relpaths.append(rel)
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise BundleError(f"{archive}: not a readable tar.gz bundle: {exc}") from exc
        except OSError as exc:
            raise BundleError(f"{archive}: extraction into {dest} failed: {exc}") from exc
        if dest.exists():
            dest.rmdir()
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [dest.joinpath(*rel.parts) for rel in relpaths]
