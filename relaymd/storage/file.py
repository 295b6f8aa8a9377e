"""`file:///abs/path` object store: keys are files below a root directory.

Used by the single-machine demo and tests. Writes go to a temp file in the target directory
and are renamed into place, so a reader never sees half an object; temp names start with
TMP_PREFIX and are never listed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from relaymd.mailbox.files import atomic_write_bytes
from relaymd.models import ObjectRef
from relaymd.storage.base import (
    ObjectNotFound,
    ObjectStore,
    ProgressCallback,
    StorageError,
)
from relaymd.storage.hashing import CHUNK_SIZE
from relaymd.storage.listing import LIST_PAGE_KEYS, ObjectInfo, ObjectListing

TMP_PREFIX = ".relaymd-tmp-"


def file_url_root(url: str) -> Path:
    """The directory a `file:///abs/path` URL names."""
    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise StorageError(f"{url}: not a file:///absolute/path URL")
    path = unquote(parsed.path)
    if not path.startswith("/"):
        raise StorageError(f"{url}: the path of a file:// store must be absolute")
    return Path(path)


def _copy_hashing(
    src_file: Path, out_fd: int, progress: ProgressCallback | None
) -> tuple[str, int]:
    """Copy `src_file` into `out_fd` (then fsync and close it); returns (sha256, size)."""
    digest = hashlib.sha256()
    total = 0
    with open(src_file, "rb") as fin, os.fdopen(out_fd, "wb") as fout:
        while chunk := fin.read(CHUNK_SIZE):
            digest.update(chunk)
            fout.write(chunk)
            total += len(chunk)
            if progress is not None:
                progress(len(chunk))
        fout.flush()
        os.fsync(fout.fileno())
    return digest.hexdigest(), total


class FileStore(ObjectStore):
    def __init__(self, root: Path, url: str | None = None) -> None:
        self.root = Path(root)
        self.url = url or self.root.as_uri()

    @classmethod
    def from_url(cls, url: str) -> FileStore:
        return cls(file_url_root(url), url)

    # -- key <-> path ---------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or any(p in ("", ".", "..") or p.startswith(TMP_PREFIX) for p in parts)
        ):
            raise StorageError(f"{self.url}: invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def _key(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _error(self, key: str, exc: OSError) -> StorageError:
        if isinstance(exc, FileNotFoundError):
            return ObjectNotFound(f"{self.url}: no object {key!r}")
        return StorageError(f"{self.url}: {key}: {exc.strerror or exc}")

    # -- writes ---------------------------------------------------------------------------

    def put_file(self, key: str, path: Path, progress: ProgressCallback | None = None) -> ObjectRef:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TMP_PREFIX)
        except OSError as exc:
            raise self._error(key, exc) from exc
        try:
            os.fchmod(fd, 0o644)
            sha, size = _copy_hashing(Path(path), fd, progress)
            os.replace(tmp, target)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, FileNotFoundError) and not Path(path).exists():
                raise StorageError(f"{path}: local file to upload does not exist") from exc
            if isinstance(exc, OSError):
                raise self._error(key, exc) from exc
            raise
        return ObjectRef(key=key, sha256=sha, size=size)

    def put_bytes(self, key: str, data: bytes) -> ObjectRef:
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(target, data)
        except OSError as exc:
            raise self._error(key, exc) from exc
        return ObjectRef(key=key, sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    # -- reads ----------------------------------------------------------------------------

    def _download(self, key: str, tmp: Path, progress: ProgressCallback | None) -> str:
        source = self._path(key)
        try:
            sha, _ = _copy_hashing(source, os.open(tmp, os.O_WRONLY), progress)
        except OSError as exc:
            raise self._error(key, exc) from exc
        return sha

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        try:
            data = self._path(key).read_bytes()
        except OSError as exc:
            raise self._error(key, exc) from exc
        if expected_sha256 is not None:
            self._check_sha(key, hashlib.sha256(data).hexdigest(), expected_sha256)
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            if not path.is_file():
                raise FileNotFoundError(errno.ENOENT, "not a file", str(path))
            return path.stat().st_size
        except OSError as exc:
            raise self._error(key, exc) from exc

    # -- listing and deletion -------------------------------------------------------------

    def _walk_root(self, prefix: str) -> Path:
        # The deepest directory every key below `prefix` must live in.
        head, _, _ = prefix.rpartition("/")
        return self.root.joinpath(*[p for p in head.split("/") if p]) if head else self.root

    def list_keys(self, prefix: str) -> list[str]:
        start = self._walk_root(prefix)
        found: list[str] = []
        if not start.is_dir():
            return found
        for dirpath, _dirnames, filenames in os.walk(start):
            for name in filenames:
                if name.startswith(TMP_PREFIX):
                    continue
                key = self._key(Path(dirpath) / name)
                if key.startswith(prefix):
                    found.append(key)
        return sorted(found)

    def list_objects(self, prefix: str) -> ObjectListing:
        objects: list[ObjectInfo] = []
        for key in self.list_keys(prefix):
            try:
                stat = self._path(key).stat()
            except FileNotFoundError:
                continue  # removed since the walk: not listed, as S3 would not list it
            # Atomic replacement gives a new inode, so this changes whenever the content can.
            etag = f"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"
            objects.append(ObjectInfo(key=key, etag=etag, size=stat.st_size))
        # Counted as S3 would page it, so request counts mean the same for both backends.
        return ObjectListing(objects=objects, requests=max(1, -(-len(objects) // LIST_PAGE_KEYS)))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with self._path(key).open("rb") as handle:
                handle.seek(start)
                return handle.read(length)
        except OSError as exc:
            raise self._error(key, exc) from exc

    def delete_key(self, key: str) -> None:
        self._unlink(key)

    def delete_prefix(self, prefix: str) -> int:
        return sum(self._unlink(key) for key in self.list_keys(prefix))

    def _unlink(self, key: str) -> bool:
        """Remove one key's file (and folders it leaves empty); False if it was already gone."""
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._error(key, exc) from exc
        self._prune_empty_dirs(path.parent)
        return True

    def _prune_empty_dirs(self, directory: Path) -> None:
        # Empty directories would be invisible to list_keys anyway; removing them keeps
        # the tree as small as the key space.
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent
