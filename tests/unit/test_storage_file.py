"""FileStore: the file:// backend, and open_store's dispatch."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from relaymd.models import StorageAccess
from relaymd.storage import FileStore, IntegrityError, ObjectNotFound, StorageError, open_store
from relaymd.storage.file import TMP_PREFIX
from relaymd.storage.hashing import sha256_bytes, sha256_file


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    store = open_store(StorageAccess(url=(tmp_path / "store").as_uri()))
    assert isinstance(store, FileStore)
    return store


def test_hashing_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 chunks
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_file(path) == sha256_bytes(data) == hashlib.sha256(data).hexdigest()


def test_put_get_round_trip_with_progress(store: FileStore, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = b"x" * (3 * (1 << 20) + 17)
    src.write_bytes(data)
    moved: list[int] = []
    ref = store.put_file("jobs/j1/input/bundle.tar.gz", src, progress=moved.append)
    assert ref.sha256 == sha256_bytes(data) and ref.size == len(data)
    assert sum(moved) == len(data) and len(moved) == 4  # one call per 1 MiB chunk
    assert store.exists(ref.key) and store.size(ref.key) == len(data)
    got: list[int] = []
    dest = tmp_path / "out" / "bundle.tar.gz"
    store.get_file(ref.key, dest, expected_sha256=ref.sha256, progress=got.append)
    assert dest.read_bytes() == data and sum(got) == len(data)
    assert store.get_bytes(ref.key, expected_sha256=ref.sha256) == data


def test_corrupt_object_is_detected_and_dest_untouched(store: FileStore, tmp_path: Path) -> None:
    ref = store.put_bytes("a/b", b"original")
    (store.root / "a" / "b").write_bytes(b"tampered")
    dest = tmp_path / "dl" / "b"
    with pytest.raises(IntegrityError, match="a/b"):
        store.get_file("a/b", dest, expected_sha256=ref.sha256)
    assert not dest.exists()
    assert list((tmp_path / "dl").iterdir()) == []  # the temp file is gone too
    with pytest.raises(IntegrityError):
        store.get_bytes("a/b", expected_sha256=ref.sha256)


def test_missing_objects(store: FileStore, tmp_path: Path) -> None:
    assert not store.exists("nope")
    with pytest.raises(ObjectNotFound):
        store.get_bytes("nope")
    with pytest.raises(ObjectNotFound):
        store.get_file("nope", tmp_path / "x")
    with pytest.raises(ObjectNotFound):
        store.size("nope")
    assert not (tmp_path / "x").exists()
    assert store.list_keys("jobs/") == []
    assert store.delete_prefix("jobs/") == 0


def test_list_and_delete_prefix(store: FileStore) -> None:
    for key in ("jobs/j1/a", "jobs/j1/sub/b", "jobs/j10/c", "jobs/j2/d", "top"):
        store.put_bytes(key, key.encode())
    # A temp file of a writer in progress is not an object.
    (store.root / "jobs" / "j1" / f"{TMP_PREFIX}x").write_bytes(b"half")
    assert store.list_keys("jobs/j1/") == ["jobs/j1/a", "jobs/j1/sub/b"]
    assert store.list_keys("jobs/j1") == ["jobs/j1/a", "jobs/j1/sub/b", "jobs/j10/c"]
    assert store.list_keys("") == sorted(
        ["jobs/j1/a", "jobs/j1/sub/b", "jobs/j10/c", "jobs/j2/d", "top"]
    )
    assert store.delete_prefix("jobs/j1/") == 2
    assert not (store.root / "jobs" / "j1" / "sub").exists()
    assert store.list_keys("jobs/") == ["jobs/j10/c", "jobs/j2/d"]
    assert store.delete_prefix("jobs/j2/d") == 1  # a full key works as a prefix


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", f"a/{TMP_PREFIX}b"])
def test_invalid_keys_are_refused(store: FileStore, key: str) -> None:
    with pytest.raises(StorageError, match="invalid object key"):
        store.put_bytes(key, b"x")


def test_check_probe_and_overwrite_is_atomic(store: FileStore) -> None:
    store.check()
    assert store.list_keys("") == []
    store.put_bytes("k", b"one")
    store.put_bytes("k", b"two")
    assert store.get_bytes("k") == b"two"
    assert [p.name for p in store.root.iterdir()] == ["k"]


def test_missing_local_file_is_a_clear_error(store: FileStore, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        store.put_file("k", tmp_path / "absent")
    assert store.list_keys("") == []


def test_open_store_rejects_bad_urls() -> None:
    with pytest.raises(StorageError, match="unsupported storage URL"):
        open_store(StorageAccess(url="ftp://host/x"))
    with pytest.raises(StorageError, match="absolute"):
        open_store(StorageAccess(url="file://relative/path"))


def test_import_does_not_pull_boto3_or_operator_modules() -> None:
    code = (
        "import sys, relaymd.storage, relaymd.storage.checkpoints, relaymd.mailbox.files, "
        "relaymd.storage.bundle\n"
        "bad = [m for m in ('boto3', 'asyncssh', 'typer', 'aiosqlite', 'jinja2', 'rich') "
        "if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
