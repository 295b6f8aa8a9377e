"""Checkpoints on a FileStore: manifest last, immutability, verification, listing."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaymd.models import CheckpointManifest, CheckpointRef, OutputsManifest
from relaymd.storage import FileStore, IntegrityError, ObjectNotFound, StorageError, keys
from relaymd.storage.checkpoints import (
    CheckpointExists,
    OutputsWriter,
    delete_checkpoint,
    download_checkpoint,
    fetch_manifest,
    list_checkpoints,
    upload_checkpoint,
    verify_checkpoint,
)
from relaymd.storage.hashing import sha256_bytes


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store")


@pytest.fixture
def files(tmp_path: Path) -> list[tuple[str, Path]]:
    src = tmp_path / "ckpt"
    (src / "sub").mkdir(parents=True)
    (src / "state.chk").write_bytes(b"C" * 5000)
    (src / "sub" / "state.xml").write_bytes(b"<State/>")
    return [("state.chk", src / "state.chk"), ("sub/state.xml", src / "sub" / "state.xml")]


def _upload(
    store: FileStore, files: list[tuple[str, Path]], epoch: int = 1, seq: int = 0
) -> CheckpointRef:
    return upload_checkpoint(
        store,
        job_id="j1",
        epoch=epoch,
        seq=seq,
        step=100 * (seq + 1),
        files=files,
        engine="openmm",
        platform="Reference",
        engine_version="8.1",
    )


def test_upload_writes_manifest_last_and_ref_pins_it(
    store: FileStore, files: list[tuple[str, Path]]
) -> None:
    moved: list[int] = []
    ref = upload_checkpoint(
        store,
        job_id="j1",
        epoch=2,
        seq=3,
        step=300,
        files=files,
        engine="openmm",
        progress=moved.append,
    )
    assert ref.prefix == keys.checkpoint_prefix("j1", 2, 3)
    assert (ref.epoch, ref.seq, ref.step) == (2, 3, 300)
    raw = store.get_bytes(keys.manifest_key(ref.prefix))
    assert ref.manifest_sha256 == sha256_bytes(raw)
    manifest = fetch_manifest(store, ref)
    assert [(f.path, f.size) for f in manifest.files] == [("state.chk", 5000), ("sub/state.xml", 8)]
    assert sum(moved) == 5008
    assert store.list_keys(ref.prefix) == [
        ref.prefix + "manifest.json",
        ref.prefix + "state.chk",
        ref.prefix + "sub/state.xml",
    ]


def test_manifest_is_never_overwritten(store: FileStore, files: list[tuple[str, Path]]) -> None:
    ref = _upload(store, files)
    with pytest.raises(CheckpointExists, match="immutable"):
        _upload(store, files[:1])
    assert fetch_manifest(store, ref).files[1].path == "sub/state.xml"


def test_retry_after_a_failed_upload_reuses_the_seq(
    store: FileStore, files: list[tuple[str, Path]], tmp_path: Path
) -> None:
    with pytest.raises(StorageError):
        _upload(store, [*files, ("missing.bin", tmp_path / "missing.bin")])
    assert list_checkpoints(store, "j1") == []  # no manifest: not a checkpoint
    ref = _upload(store, files)
    assert list_checkpoints(store, "j1") == [ref]


def test_download_verifies_and_lands_files(
    store: FileStore, files: list[tuple[str, Path]], tmp_path: Path
) -> None:
    ref = _upload(store, files)
    dest = tmp_path / "work" / "resume"
    manifest = download_checkpoint(store, ref, dest)
    assert manifest.step == 100
    assert (dest / "state.chk").read_bytes() == b"C" * 5000
    assert (dest / "sub" / "state.xml").read_bytes() == b"<State/>"
    assert [p.name for p in dest.parent.iterdir()] == ["resume"]  # no staging left


def test_corrupt_file_fails_download_and_leaves_nothing(
    store: FileStore, files: list[tuple[str, Path]], tmp_path: Path
) -> None:
    ref = _upload(store, files)
    (store.root / ref.prefix / "sub" / "state.xml").write_bytes(b"<Stale/>")  # same size
    verify_checkpoint(store, ref)  # sizes still match: only content hashing can tell
    dest = tmp_path / "work" / "resume"
    with pytest.raises(IntegrityError, match=r"sub/state\.xml"):
        download_checkpoint(store, ref, dest)
    assert not dest.exists()
    assert list((tmp_path / "work").iterdir()) == []


def test_missing_file_fails_verify_and_download(
    store: FileStore, files: list[tuple[str, Path]], tmp_path: Path
) -> None:
    ref = _upload(store, files)
    (store.root / ref.prefix / "state.chk").unlink()
    with pytest.raises(ObjectNotFound):
        verify_checkpoint(store, ref)
    with pytest.raises(ObjectNotFound):
        download_checkpoint(store, ref, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_truncated_file_fails_verify(store: FileStore, files: list[tuple[str, Path]]) -> None:
    ref = _upload(store, files)
    (store.root / ref.prefix / "state.chk").write_bytes(b"C" * 10)
    with pytest.raises(IntegrityError, match="10 bytes where the manifest records 5000"):
        verify_checkpoint(store, ref)


def test_replaced_manifest_fails_the_pinned_ref(
    store: FileStore, files: list[tuple[str, Path]]
) -> None:
    ref = _upload(store, files)
    path = store.root / keys.manifest_key(ref.prefix)
    manifest = CheckpointManifest.model_validate_json(path.read_bytes())
    path.write_text(manifest.model_copy(update={"step": 999}).model_dump_json())
    with pytest.raises(IntegrityError, match=r"manifest\.json"):
        fetch_manifest(store, ref)


def test_manifest_with_escaping_path_is_refused(
    store: FileStore, files: list[tuple[str, Path]], tmp_path: Path
) -> None:
    ref = _upload(store, files)
    key = keys.manifest_key(ref.prefix)
    manifest = CheckpointManifest.model_validate_json(store.get_bytes(key))
    manifest.files[0].path = "../../escape"
    bad = store.put_bytes(key, manifest.model_dump_json().encode())
    with pytest.raises(StorageError, match="escape"):
        download_checkpoint(
            store, ref.model_copy(update={"manifest_sha256": bad.sha256}), tmp_path / "d"
        )
    assert not (tmp_path / "escape").exists()


def test_list_newest_first_and_skip_incomplete(
    store: FileStore, files: list[tuple[str, Path]]
) -> None:
    a = _upload(store, files, epoch=1, seq=0)
    b = _upload(store, files, epoch=1, seq=1)
    c = _upload(store, files, epoch=2, seq=0)
    store.put_bytes(keys.checkpoint_prefix("j1", 3, 0) + "state.chk", b"no manifest yet")
    store.put_bytes(keys.manifest_key(keys.checkpoint_prefix("j1", 4, 0)), b"{garbage")
    store.put_bytes(keys.manifest_key(keys.checkpoint_prefix("j10", 9, 9)), b"other job")
    assert list_checkpoints(store, "j1") == [c, b, a]
    assert list_checkpoints(store, "nobody") == []


def test_delete_checkpoint(store: FileStore, files: list[tuple[str, Path]]) -> None:
    a = _upload(store, files, seq=0)
    b = _upload(store, files, seq=1)
    assert delete_checkpoint(store, a) == 3
    assert list_checkpoints(store, "j1") == [b]
    assert store.list_keys(a.prefix) == []


def test_bad_relpaths_are_refused(store: FileStore, files: list[tuple[str, Path]]) -> None:
    local = files[0][1]
    for rel in ("../x", "/abs", "a//b", "manifest.json", ""):
        with pytest.raises(StorageError):
            _upload(store, [(rel, local)])
    with pytest.raises(StorageError, match="twice"):
        _upload(store, [("a", local), ("a", local)])
    assert store.list_keys("") == []


def test_outputs_writer_lists_every_file_in_the_epoch_manifest(
    store: FileStore, files: list[tuple[str, Path]]
) -> None:
    writer = OutputsWriter(store, job_id="j1", epoch=4)
    refs = writer.upload(files[:1])
    assert [r.key for r in refs] == ["jobs/j1/outputs/4/state.chk"]
    # A worker restarted in the same epoch continues the manifest instead of replacing it.
    again = OutputsWriter(store, job_id="j1", epoch=4)
    [ref] = again.upload(files[1:])
    assert ref.key == "jobs/j1/outputs/4/sub/state.xml"
    assert store.get_bytes(ref.key, expected_sha256=ref.sha256) == b"<State/>"
    manifest = OutputsManifest.model_validate_json(
        store.get_bytes("jobs/j1/outputs/4/manifest.json")
    )
    assert [(f.path, f.sha256) for f in manifest.files] == [
        ("state.chk", refs[0].sha256),
        ("sub/state.xml", ref.sha256),
    ]
    with pytest.raises(StorageError, match="reserved"):
        again.upload([("manifest.json", files[0][1])])
