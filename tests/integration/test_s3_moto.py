"""S3Store against moto's server over real HTTP: round trips, multipart, integrity, retries."""

from __future__ import annotations

import http.client
import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.retries.standard import ExponentialBackoff

from relaymd import logging as relaymd_logging
from relaymd.storage import IntegrityError, ObjectNotFound, StorageError, open_store
from relaymd.storage import s3 as s3_module
from relaymd.storage.checkpoints import download_checkpoint, list_checkpoints, upload_checkpoint
from relaymd.storage.hashing import sha256_bytes
from relaymd.storage.s3 import S3Store
from tests.moto_server import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    MotoServer,
    free_port,
    run_moto_server,
)

MIB = 1 << 20


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with run_moto_server() as server:
        yield server


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "RETRY_WAIT_S", 0.001)
    monkeypatch.setattr(s3_module, "RETRY_MAX_WAIT_S", 0.01)
    # botocore's own backoff (up to 20 s between a part's tries) at test speed.
    monkeypatch.setattr(ExponentialBackoff, "_MAX_BACKOFF", 0.01)


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    relaymd_logging.configure(development=False, stream=buffer)
    yield buffer
    relaymd_logging.configure()


class FlakyProxy:
    """Forwards HTTP to moto, but answers 503 SlowDown to the first `failures` requests.

    The 503 message quotes the request's Authorization header, as some servers quote the
    access key id in errors: the store must still never log it in clear.
    """

    def __init__(self, upstream: str, failures: int) -> None:
        self.upstream = urlsplit(upstream)
        self.failures = failures
        self.requests = 0
        self.refused = 0
        # Query parameters (e.g. "partNumber=2") whose first request is answered 503 once.
        self.fail_once: set[str] = set()
        self.seen: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:
                    proxy.requests += 1
                    proxy.seen.append((self.command, self.path))
                    params = set(urlsplit(self.path).query.split("&"))
                    marker = next((m for m in proxy.fail_once if m in params), None)
                    if marker is not None:
                        proxy.fail_once.discard(marker)
                    refuse = marker is not None or proxy.refused < proxy.failures
                    proxy.refused += refuse
                if refuse:
                    auth = self.headers.get("Authorization", "")
                    data = (
                        "<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                        f"<Message>Please reduce your request rate ({auth})</Message></Error>"
                    ).encode()
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=30
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _store(moto: MotoServer, **overrides: object) -> S3Store:
    store = open_store(moto.access(**overrides))  # type: ignore[arg-type]
    assert isinstance(store, S3Store)
    return store


def test_round_trip_list_and_delete_under_a_prefix(moto: MotoServer, tmp_path: Path) -> None:
    store = _store(moto, prefix="relay/dev")
    store.check()
    src = tmp_path / "in.bin"
    src.write_bytes(b"abc" * 1000)
    moved: list[int] = []
    ref = store.put_file("jobs/j1/input/bundle.tar.gz", src, progress=moved.append)
    assert ref.sha256 == sha256_bytes(src.read_bytes()) and sum(moved) == 3000
    store.put_bytes("jobs/j1/a", b"A")
    store.put_bytes("jobs/j10/b", b"B")
    assert store.list_keys("jobs/j1/") == ["jobs/j1/a", "jobs/j1/input/bundle.tar.gz"]
    assert store.exists("jobs/j1/a") and not store.exists("jobs/j1/zzz")
    assert store.size("jobs/j1/input/bundle.tar.gz") == 3000
    dest = tmp_path / "out" / "bundle.tar.gz"
    store.get_file(ref.key, dest, expected_sha256=ref.sha256)
    assert dest.read_bytes() == src.read_bytes()
    assert store.get_bytes("jobs/j1/a", expected_sha256=sha256_bytes(b"A")) == b"A"

    raw = moto.client()
    bucket = store.bucket
    head = raw.head_object(Bucket=bucket, Key="relay/dev/jobs/j1/input/bundle.tar.gz")
    assert head["Metadata"]["sha256"] == ref.sha256  # recorded for later audits
    assert store.delete_prefix("jobs/j1/") == 2
    assert store.list_keys("") == ["jobs/j10/b"]
    assert [o["Key"] for o in raw.list_objects_v2(Bucket=bucket)["Contents"]] == [
        "relay/dev/jobs/j10/b"
    ]
    with pytest.raises(ObjectNotFound):
        store.get_bytes("jobs/j1/a")
    with pytest.raises(ObjectNotFound):
        store.get_file("jobs/j1/a", tmp_path / "missing")
    with pytest.raises(ObjectNotFound):
        store.size("jobs/j1/a")
    assert not (tmp_path / "missing").exists()


def test_multipart_upload_above_threshold(moto: MotoServer, tmp_path: Path) -> None:
    store = _store(moto, multipart_threshold_mib=5)
    data = bytes(range(256)) * (6 * MIB // 256)  # 6 MiB: two parts of 5 + 1 MiB
    src = tmp_path / "big.chk"
    src.write_bytes(data)
    moved: list[int] = []
    ref = store.put_file("big.chk", src, progress=moved.append)
    assert sum(moved) == len(data)
    etag = moto.client().head_object(Bucket=store.bucket, Key="big.chk")["ETag"]
    assert etag.strip('"').endswith("-2")  # S3's mark of a 2-part multipart upload
    got: list[int] = []
    store.get_file(
        "big.chk", tmp_path / "back.chk", expected_sha256=ref.sha256, progress=got.append
    )
    assert (tmp_path / "back.chk").read_bytes() == data and sum(got) == len(data)


def test_checkpoint_round_trip(moto: MotoServer, tmp_path: Path) -> None:
    store = _store(moto)
    (tmp_path / "state.chk").write_bytes(b"checkpoint" * 100)
    (tmp_path / "state.xml").write_bytes(b"<State/>")
    files = [("state.chk", tmp_path / "state.chk"), ("state.xml", tmp_path / "state.xml")]
    ref = upload_checkpoint(
        store, job_id="j1", epoch=1, seq=0, step=50, files=files, engine="openmm"
    )
    assert list_checkpoints(store, "j1") == [ref]
    manifest = download_checkpoint(store, ref, tmp_path / "resume")
    assert [f.path for f in manifest.files] == ["state.chk", "state.xml"]
    assert (tmp_path / "resume" / "state.chk").read_bytes() == b"checkpoint" * 100


def test_corrupted_object_is_detected_by_sha256(moto: MotoServer, tmp_path: Path) -> None:
    store = _store(moto)
    ref = store.put_bytes("jobs/j1/checkpoints/1-0/state.chk", b"good content")
    moto.client().put_object(Bucket=store.bucket, Key=ref.key, Body=b"evil content")
    dest_dir = tmp_path / "dl"
    with pytest.raises(IntegrityError, match="does not match"):
        store.get_file(ref.key, dest_dir / "state.chk", expected_sha256=ref.sha256)
    assert not (dest_dir / "state.chk").exists()
    assert list(dest_dir.iterdir()) == []  # no partial file left either
    with pytest.raises(IntegrityError):
        store.get_bytes(ref.key, expected_sha256=ref.sha256)


def test_503s_are_retried_until_the_server_answers(
    moto: MotoServer, tmp_path: Path, log_buffer: io.StringIO
) -> None:
    bucket = moto.create_bucket()
    with FlakyProxy(moto.endpoint_url, failures=3) as proxy:
        store = _store(moto, bucket=bucket, endpoint_url=proxy.url)
        ref = store.put_bytes("k", b"payload")
        # botocore's three requests all got 503, the outer retry's next one went through.
        assert proxy.requests == 4
        proxy.failures += 2
        src = tmp_path / "f.bin"
        src.write_bytes(b"f" * 10_000)
        store.put_file("f.bin", src)
        store.get_file(
            "f.bin", tmp_path / "back.bin", expected_sha256=sha256_bytes(src.read_bytes())
        )
        assert store.get_bytes("k", expected_sha256=ref.sha256) == b"payload"
        assert proxy.refused == 5 and proxy.requests >= 5 + 4
    logs = log_buffer.getvalue()
    # Only the first call ran out of botocore's requests; the later 503s were absorbed there.
    assert logs.count('"storage_retry"') == 1
    assert "SlowDown" in logs
    # The proxy echoed the Authorization header (with the access key id) into its errors.
    assert ACCESS_KEY_ID not in logs and SECRET_ACCESS_KEY not in logs
    assert relaymd_logging.REDACTED in logs


def test_a_503_on_one_part_resends_only_that_part(moto: MotoServer, tmp_path: Path) -> None:
    bucket = moto.create_bucket()
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * (12 * MIB // 256))  # parts of 5, 5 and 2 MiB
    with FlakyProxy(moto.endpoint_url, failures=0) as proxy:
        store = _store(moto, bucket=bucket, endpoint_url=proxy.url, multipart_threshold_mib=5)
        proxy.fail_once.add("partNumber=2")
        ref = store.put_file("big.bin", src)
    puts = [urlsplit(p).query.split("&") for m, p in proxy.seen if m == "PUT"]
    per_part = {n: sum(f"partNumber={n}" in q for q in puts) for n in (1, 2, 3)}
    assert per_part == {1: 1, 2: 2, 3: 1}  # only the refused part went again
    starts = [p for m, p in proxy.seen if m == "POST" and p.endswith("?uploads")]
    assert len(starts) == 1  # the multipart upload was not restarted
    body = moto.client().get_object(Bucket=bucket, Key=ref.key)["Body"].read()
    assert body == src.read_bytes()


def test_persistent_503_gives_up_after_max_attempts(moto: MotoServer) -> None:
    bucket = moto.create_bucket()
    with FlakyProxy(moto.endpoint_url, failures=10**6) as proxy:
        store = _store(moto, bucket=bucket, endpoint_url=proxy.url, max_attempts=3)
        with pytest.raises(StorageError, match="after 3 attempts") as caught:
            store.put_bytes("k", b"payload")
        assert proxy.requests == 3 * s3_module.REQUEST_ATTEMPTS
        assert not isinstance(caught.value, ObjectNotFound)
    assert moto.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_connection_refused_is_retried_then_reported(moto: MotoServer) -> None:
    store = _store(moto, endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=2)
    with pytest.raises(StorageError, match="after 2 attempts"):
        store.exists("anything")


def test_secrets_never_reach_the_log(moto: MotoServer, log_buffer: io.StringIO) -> None:
    store = _store(moto)
    # Emit through the store's own logger with both secrets inside a field.
    s3_module.log.warning("probe", detail=f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}")
    store.put_bytes("k", b"v")
    logs = log_buffer.getvalue()
    assert ACCESS_KEY_ID not in logs and SECRET_ACCESS_KEY not in logs
    assert logs.count(relaymd_logging.REDACTED) == 2


def test_missing_bucket_is_named(moto: MotoServer) -> None:
    store = _store(moto, bucket="no-such-bucket-here")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist") as caught:
        store.get_bytes("k")
    assert not isinstance(caught.value, ObjectNotFound)
