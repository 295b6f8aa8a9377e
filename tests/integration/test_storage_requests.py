"""Storage requests per handoff: counted at a latency proxy in front of moto (what really
crossed the wire), and independent requests shown to be in flight together (a barrier that
only opens when they are, so a sequential implementation fails instead of running slower)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaymd.daemon import claim_checks
from relaymd.mailbox.models import Assignment
from relaymd.models import CheckpointRef, ObjectRef
from relaymd.storage import keys, open_store
from relaymd.storage.base import ObjectStore, ProgressCallback
from relaymd.storage.bundle import pack_bundle
from relaymd.storage.checkpoints import OutputsWriter, upload_checkpoint
from relaymd.storage.file import FileStore
from relaymd.storage.s3 import S3Store
from tests.latency_proxy import LatencyProxy, run_latency_proxy
from tests.moto_server import MotoServer, run_moto_server
from worker_entry.engines.base import PendingCheckpoint
from worker_entry.staging import stage
from worker_entry.uploader import CheckpointUploader

BARRIER_TIMEOUT_S = 60.0  # only reached when the calls do NOT overlap: then the test fails
FILES = ("state.xml", "checkpoint.chk", "system.xml")


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with run_moto_server() as server:
        yield server


@pytest.fixture
def proxied(moto: MotoServer) -> Iterator[tuple[LatencyProxy, S3Store]]:
    bucket = moto.create_bucket()
    with run_latency_proxy(moto.endpoint_url, delay_s=0.1) as proxy:
        store = open_store(moto.access(bucket, endpoint_url=proxy.endpoint_url))
        assert isinstance(store, S3Store)
        yield proxy, store


def _files(root: Path) -> list[tuple[str, Path]]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for n, name in enumerate(FILES):
        path = root / name
        path.write_bytes(bytes([n]) * (1000 + n))
        out.append((name, path))
    return out


def _by_method(proxy: LatencyProxy) -> Counter[str]:
    return Counter(r.method for r in proxy.snapshot())


def _upload(store: ObjectStore, tmp_path: Path, *, seq: int = 1) -> CheckpointRef:
    return upload_checkpoint(
        store,
        job_id="j1",
        epoch=1,
        seq=seq,
        step=100 * seq,
        files=_files(tmp_path / f"ckpt{seq}"),
        engine="openmm",
    )


def test_a_checkpoint_upload_makes_a_bounded_number_of_requests(
    proxied: tuple[LatencyProxy, S3Store], tmp_path: Path
) -> None:
    proxy, store = proxied
    proxy.reset()
    ref = _upload(store, tmp_path)
    requests = proxy.snapshot()
    # One existence check, the files, the manifest, then the read-back: manifest and sizes.
    assert _by_method(proxy) == Counter(HEAD=1 + len(FILES), PUT=len(FILES) + 1, GET=1)
    manifest_path = f"/{store.bucket}/{keys.manifest_key(ref.prefix)}"
    puts = [r.path for r in requests if r.method == "PUT"]
    assert puts[-1] == manifest_path  # the manifest goes last: it makes the checkpoint exist
    assert sorted(puts[:-1]) == sorted(f"/{store.bucket}/{ref.prefix}{name}" for name in FILES)


def test_resuming_fetches_the_bundle_and_checkpoint_with_a_bounded_number_of_requests(
    proxied: tuple[LatencyProxy, S3Store], tmp_path: Path
) -> None:
    proxy, store = proxied
    ref = _upload(store, tmp_path)
    assignment = _assignment(store, tmp_path, ref)
    proxy.reset()
    staged = stage(store, assignment, tmp_path / "seg")
    assert staged.resumed_ref == ref
    assert sorted(p.name for p in staged.restored.directory.iterdir()) == sorted(FILES)  # type: ignore[union-attr]
    # One GET each: the manifest, every checkpoint file, the bundle, the listing of the
    # epoch's checkpoints (a restarted worker's seqs) and its outputs manifest.
    assert _by_method(proxy) == Counter(GET=1 + len(FILES) + 1 + 2)
    assert staged.last_seq == 0 and staged.outputs is not None and not staged.outputs.files


def _assignment(store: ObjectStore, tmp_path: Path, ref: CheckpointRef | None) -> Assignment:
    inputs = tmp_path / "inputs"
    inputs.mkdir(exist_ok=True)
    (inputs / "system.xml").write_text("<System/>")
    pack_bundle(inputs, tmp_path / "bundle.tar.gz")
    bundle = store.put_file(keys.bundle_key("j1"), tmp_path / "bundle.tar.gz")
    return Assignment.model_validate(
        {
            "allocation_id": "a1",
            "job_id": "j1",
            "epoch": 2,
            "engine": {"kind": "openmm", "total_steps": 1000},
            "bundle": bundle,
            "resume": ref,
        }
    )


class MeetingStore(FileStore):
    """A file:// store where the first `waiters[op]` calls of each op wait at one barrier:
    none returns until all of them are in flight together."""

    def __init__(self, root: Path, waiters: dict[str, int]) -> None:
        super().__init__(root)
        self.barrier = threading.Barrier(sum(waiters.values()), timeout=BARRIER_TIMEOUT_S)
        self.waiters = dict(waiters)
        self.calls: list[str] = []
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _meet(self, op: str, key: str) -> None:
        with self._lock:
            self.calls.append(f"{op} {key}")
            self.in_flight[op] += 1
            self.max_in_flight[op] = max(self.max_in_flight[op], self.in_flight[op])
            wait = self.waiters.get(op, 0) > 0
            if wait:
                self.waiters[op] -= 1
        try:
            if wait:
                self.barrier.wait()
        finally:
            with self._lock:
                self.in_flight[op] -= 1

    def put_file(self, key: str, path: Path, progress: ProgressCallback | None = None) -> ObjectRef:
        self._meet("put_file", key)
        return super().put_file(key, path, progress)

    def put_bytes(self, key: str, data: bytes) -> ObjectRef:
        self._meet("put_bytes", key)
        return super().put_bytes(key, data)

    def get_file(
        self,
        key: str,
        dest: Path,
        expected_sha256: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self._meet("get_file", key)
        super().get_file(key, dest, expected_sha256, progress)

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        self._meet("get_bytes", key)
        return super().get_bytes(key, expected_sha256)

    def size(self, key: str) -> int:
        self._meet("size", key)
        return super().size(key)

    def list_keys(self, prefix: str) -> list[str]:
        self._meet("list_keys", prefix)
        return super().list_keys(prefix)


def test_checkpoint_files_upload_together_and_the_manifest_after_them(tmp_path: Path) -> None:
    store = MeetingStore(tmp_path / "store", {"put_file": len(FILES)})
    ref = _upload(store, tmp_path)
    puts = [c for c in store.calls if c.startswith(("put_file", "put_bytes"))]
    assert puts[-1] == f"put_bytes {keys.manifest_key(ref.prefix)}"
    assert len(puts) == len(FILES) + 1


def test_a_resume_fetches_the_bundle_while_it_fetches_the_checkpoint(tmp_path: Path) -> None:
    plain = FileStore(tmp_path / "store")
    ref = _upload(plain, tmp_path)
    assignment = _assignment(plain, tmp_path, ref)
    # The bundle download (the first get_file: checkpoint files come after the manifest)
    # must be in flight while the checkpoint's manifest is read.
    store = MeetingStore(tmp_path / "store", {"get_file": 1, "get_bytes": 1})
    staged = stage(store, assignment, tmp_path / "seg")
    assert staged.resumed_ref == ref
    assert f"get_file {assignment.bundle.key}" in store.calls
    assert (staged.work_dir / "system.xml").read_text() == "<System/>"


def test_a_start_fetches_its_four_inputs_at_once(tmp_path: Path) -> None:
    """Bundle, resume checkpoint, the epoch's used seqs and its outputs manifest: all four
    requests in flight together (a restarted worker of epoch 2 left seq 3 and an output)."""
    plain = FileStore(tmp_path / "store")
    ref = _upload(plain, tmp_path)
    assignment = _assignment(plain, tmp_path, ref)
    upload_checkpoint(
        plain, job_id="j1", epoch=2, seq=3, step=300, files=_files(tmp_path / "c3"), engine="openmm"
    )
    OutputsWriter(plain, job_id="j1", epoch=2).upload(_files(tmp_path / "out")[:1])
    # The bundle's get_file, the checkpoint manifest's and the outputs manifest's get_bytes,
    # the epoch's listing: none returns until all four are waiting.
    store = MeetingStore(tmp_path / "store", {"get_file": 1, "get_bytes": 2, "list_keys": 1})
    staged = stage(store, assignment, tmp_path / "seg")
    assert staged.resumed_ref == ref and staged.last_seq == 3
    assert staged.outputs is not None and [f.path for f in staged.outputs.files] == [FILES[0]]


async def test_the_daemon_verifies_claims_concurrently_and_bounded(tmp_path: Path) -> None:
    plain = FileStore(tmp_path / "store")
    claims = [("j1", _upload(plain, tmp_path, seq=seq)) for seq in range(1, 21)]
    bound = claim_checks.VERIFY_CONCURRENCY
    assert len(claims) > bound
    # The first `bound` manifest reads only return once all of them are in flight together.
    store = MeetingStore(tmp_path / "store", {"get_bytes": bound})
    failures = await asyncio.wait_for(claim_checks.verify_claims(store, claims), 120)
    assert failures == [None] * len(claims)
    assert store.max_in_flight["get_bytes"] == bound  # never more checks at once
    assert sum(c.startswith("get_bytes") for c in store.calls) == len(claims)


def test_a_stop_sends_outputs_with_the_checkpoint_files_and_its_manifest_after_both(
    tmp_path: Path,
) -> None:
    # The output chunk and the checkpoint file only return once both are in flight.
    store = MeetingStore(tmp_path / "store", {"put_file": 2})
    local = tmp_path / "ckpt1"
    (local / "outputs").mkdir(parents=True)
    (local / "state.xml").write_text("<State/>")
    chunk = "state_data.0000000000-0000000010.csv"
    (local / "outputs" / chunk).write_text("rows\n")
    uploaded: list[CheckpointRef] = []
    uploader = CheckpointUploader(
        store,
        job_id="j1",
        epoch=1,
        engine="openmm",
        outputs=OutputsWriter(store, job_id="j1", epoch=1),
        on_uploaded=lambda ref, _: uploaded.append(ref),
    )
    uploader.start()
    try:
        uploader.submit(
            PendingCheckpoint(
                seq=1,
                step=10,
                files=[("state.xml", local / "state.xml")],
                local_dir=local,
                outputs=[(chunk, local / "outputs" / chunk)],
            )
        )
        assert uploader.wait_idle(2 * BARRIER_TIMEOUT_S)
    finally:
        uploader.close()
    assert len(uploaded) == 1 and uploader.last_error is None
    writes = [c for c in store.calls if c.startswith(("put_file", "put_bytes"))]
    checkpoint_manifest = f"put_bytes {keys.manifest_key(uploaded[0].prefix)}"
    outputs_manifest = f"put_bytes {keys.manifest_key(keys.outputs_prefix('j1', 1))}"
    assert writes[-1] == checkpoint_manifest  # the checkpoint exists only after its outputs
    assert writes.index(outputs_manifest) < writes.index(checkpoint_manifest)
    assert len(writes) == 4
