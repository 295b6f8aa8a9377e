"""S3-compatible object store (Backblaze B2, AWS, moto) with boto3.

Retries are ours, not botocore's: exponential backoff with jitter and long caps (B2 answers
503 under load and asks clients to back off), on 5xx/SlowDown/timeouts/connection errors,
`StorageAccess.max_attempts` tries in all. Every upload records the content's sha256 as
object metadata; every download whose sha256 the caller knows is verified before it is
moved into place.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from relaymd.envvars import env_float
from relaymd.logging import add_secret, get_logger
from relaymd.models import ObjectRef, StorageAccess
from relaymd.storage.base import (
    ObjectNotFound,
    ObjectStore,
    ProgressCallback,
    StorageError,
    TransferCancelled,
)
from relaymd.storage.hashing import sha256_bytes, sha256_file
from relaymd.storage.listing import ObjectInfo, ObjectListing

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = get_logger(__name__)
T = TypeVar("T")

MIB = 1 << 20
# Backoff: random wait in [0, min(RETRY_MAX_WAIT_S, RETRY_WAIT_S * 2**n)]. Read at each call,
# so tests (and impatient operators, via the environment) can shorten it.
RETRY_WAIT_S = env_float("RELAYMD_STORAGE_RETRY_WAIT_S", 2.0, maximum=3600.0)
RETRY_MAX_WAIT_S = env_float("RELAYMD_STORAGE_RETRY_MAX_WAIT_S", 300.0, maximum=86400.0)
SHA256_METADATA = "sha256"
# Requests botocore makes for one S3 call (one multipart part, one GET) before it gives up:
# a 500/503 on one part (B2 sends them by design) re-sends that part, not the whole upload.
# The outer retry (max_attempts, minutes of backoff) is for outages longer than that.
REQUEST_ATTEMPTS = 3

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
_RETRY_CODES = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "Throttling",
    "TooManyRequests",
}
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps (boto3's transfer layer re-raises ClientErrors as others)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        wrapped = getattr(current, "last_exception", None)
        if wrapped is None:  # botocore's HTTPClientError keeps what urllib3 raised here
            wrapped = (getattr(current, "kwargs", None) or {}).get("error")
        current = (
            wrapped
            if isinstance(wrapped, BaseException)
            else (current.__cause__ or current.__context__)
        )
    return chain


def _client_error(exc: BaseException) -> ClientError | None:
    return next((e for e in _causes(exc) if isinstance(e, ClientError)), None)


def _cancelled(exc: BaseException) -> TransferCancelled | None:
    return next((e for e in _causes(exc) if isinstance(e, TransferCancelled)), None)


def _is_retryable(exc: BaseException) -> bool:
    if _cancelled(exc) is not None:
        return False
    for cause in _causes(exc):
        if isinstance(cause, ClientError):
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = cause.response.get("Error", {}).get("Code", "")
            return status in _RETRY_STATUS or code in _RETRY_CODES
        if isinstance(cause, ConnectionError | HTTPClientError | TimeoutError):
            return True
    return False


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix ending in '/' or empty) of `s3://bucket[/prefix]`."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{url}: not an s3://bucket[/prefix] URL")
    prefix = parsed.path.strip("/")
    return parsed.netloc, (prefix + "/" if prefix else "")


class S3Store(ObjectStore):
    def __init__(self, access: StorageAccess) -> None:
        self.url = access.url
        self.bucket, self.prefix = parse_s3_url(access.url)
        self.max_attempts = access.max_attempts
        for secret in access.secret_values():
            add_secret(secret)
        config = Config(
            # B2 (and other S3-compatibles) reject the CRC checksums botocore now adds by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"total_max_attempts": REQUEST_ATTEMPTS, "mode": "standard"},
            connect_timeout=30,
            read_timeout=120,
            # Checkpoint files, outputs and the daemon's claim checks go out concurrently
            # (relaymd.storage.parallel): keep a connection for each instead of reopening.
            max_pool_connections=32,
            s3={"addressing_style": "path"} if access.endpoint_url else None,
        )
        session = boto3.session.Session(
            aws_access_key_id=_reveal(access.access_key_id),
            aws_secret_access_key=_reveal(access.secret_access_key),
            region_name=access.region,
        )
        self.client: S3Client = session.client(
            "s3", endpoint_url=access.endpoint_url, config=config
        )
        threshold = access.multipart_threshold_mib * MIB
        self.transfer_config = TransferConfig(
            multipart_threshold=threshold,
            # S3 parts must be at least 5 MiB (all but the last).
            multipart_chunksize=max(threshold, 5 * MIB),
            max_concurrency=4,
        )

    # -- plumbing -------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise StorageError(f"{self.url}: invalid object key {key!r}")
        return self.prefix + key

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """Run `fn` with backoff on transient failures; map errors to StorageError."""

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "storage_retry",
                op=op,
                url=self.url,
                key=key,
                attempt=state.attempt_number,
                max_attempts=self.max_attempts,
                error=str(exc),
            )

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_random_exponential(multiplier=RETRY_WAIT_S, max=RETRY_MAX_WAIT_S),
            retry=retry_if_exception(_is_retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(fn)
        except StorageError:
            raise
        except (BotoCoreError, ClientError, Boto3Error, OSError) as exc:
            cancelled = _cancelled(exc)  # a progress callback stopped it: not a storage error
            if cancelled is not None:
                raise cancelled from None
            if isinstance(exc, OSError):  # the local side: disk full, unreadable file
                raise StorageError(f"{self.url}: {op} {key}: {exc}") from exc
            raise self._error(op, key, exc) from exc

    def _error(self, op: str, key: str, exc: BaseException) -> StorageError:
        client_error = _client_error(exc)
        if client_error is not None:
            code = str(client_error.response.get("Error", {}).get("Code", ""))
            status = client_error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return StorageError(
                    f"{self.url}: bucket {self.bucket!r} does not exist; create it or fix "
                    "storage.url in the config"
                )
            if _is_not_found(client_error):
                return ObjectNotFound(f"{self.url}: no object {key!r}")
            if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId"):
                return StorageError(
                    f"{self.url}: {op} {key}: access denied ({code}); check the storage "
                    "credentials and that the key may use this bucket"
                )
        attempts = (
            f" after {self.max_attempts} attempts (of up to {REQUEST_ATTEMPTS} requests each)"
            if _is_retryable(exc)
            else ""
        )
        return StorageError(f"{self.url}: {op} {key} failed{attempts}: {exc}")

    # -- writes ---------------------------------------------------------------------------

    def put_file(self, key: str, path: Path, progress: ProgressCallback | None = None) -> ObjectRef:
        path = Path(path)
        try:
            sha, size = sha256_file(path), path.stat().st_size
        except OSError as exc:
            raise StorageError(f"{path}: cannot read the file to upload: {exc.strerror}") from exc
        full = self._full(key)

        def upload() -> None:
            self.client.upload_file(
                str(path),
                self.bucket,
                full,
                ExtraArgs={"Metadata": {SHA256_METADATA: sha}},
                Callback=progress,
                Config=self.transfer_config,
            )

        self._call("upload", key, upload)
        return ObjectRef(key=key, sha256=sha, size=size)

    def put_bytes(self, key: str, data: bytes) -> ObjectRef:
        sha = sha256_bytes(data)
        full = self._full(key)
        self._call(
            "put",
            key,
            lambda: self.client.put_object(
                Bucket=self.bucket, Key=full, Body=data, Metadata={SHA256_METADATA: sha}
            ),
        )
        return ObjectRef(key=key, sha256=sha, size=len(data))

    # -- reads ----------------------------------------------------------------------------

    def _download(self, key: str, tmp: Path, progress: ProgressCallback | None) -> str:
        full = self._full(key)
        self._call(
            "download",
            key,
            lambda: self.client.download_file(
                self.bucket, full, str(tmp), Callback=progress, Config=self.transfer_config
            ),
        )
        return sha256_file(tmp)

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        full = self._full(key)

        def read() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            with contextlib.closing(body):
                return body.read()

        data = self._call("get", key, read)
        self._check_sha(key, sha256_bytes(data), expected_sha256)
        return data

    def _head(self, key: str) -> dict[str, Any] | None:
        full = self._full(key)

        def head() -> dict[str, Any] | None:
            try:
                return dict(self.client.head_object(Bucket=self.bucket, Key=full))
            except ClientError as exc:
                if _is_not_found(exc):
                    return None
                raise

        return self._call("head", key, head)

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise ObjectNotFound(f"{self.url}: no object {key!r}")
        return int(head["ContentLength"])

    # -- listing and deletion -------------------------------------------------------------

    def list_keys(self, prefix: str) -> list[str]:
        full = self.prefix + prefix

        def listing() -> list[str]:
            found: list[str] = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                found.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
            return found

        return sorted(self._call("list", prefix, listing))

    def list_objects(self, prefix: str) -> ObjectListing:
        listing = functools.partial(_list_objects, self.client, self.bucket, self.prefix)
        return self._call("list", prefix, lambda: listing(prefix))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        read = functools.partial(_get_range, self.client, self.bucket, self._full(key))
        return self._call("get", key, lambda: read(start, length))

    def delete_key(self, key: str) -> None:
        self._call("delete", key, functools.partial(self._delete_one, key))

    def delete_prefix(self, prefix: str) -> int:
        # One DeleteObject per key: DeleteObjects needs a body checksum that some
        # S3-compatible stores accept only as Content-MD5, which botocore no longer sends.
        keys = self.list_keys(prefix)
        for key in keys:
            self.delete_key(key)
        return len(keys)

    def _delete_one(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))


def _list_objects(client: S3Client, bucket: str, root: str, prefix: str) -> ObjectListing:
    """Every object below `root + prefix`, keys relative to `root`, one request per page."""
    found: list[ObjectInfo] = []
    pages = 0
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=root + prefix
    ):
        pages += 1
        found.extend(
            ObjectInfo(
                key=item["Key"][len(root) :],
                etag=item.get("ETag", ""),
                size=int(item.get("Size", 0)),
            )
            for item in page.get("Contents", [])
        )
    return ObjectListing(objects=sorted(found, key=lambda o: o.key), requests=pages)


def _get_range(client: S3Client, bucket: str, full_key: str, start: int, length: int) -> bytes:
    try:
        response = client.get_object(
            Bucket=bucket, Key=full_key, Range=f"bytes={start}-{start + length - 1}"
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "InvalidRange":
            return b""  # `start` is at or past the end
        raise
    with contextlib.closing(response["Body"]) as body:
        return body.read()


def _is_not_found(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in _NOT_FOUND_CODES or status == 404


def _reveal(secret: Any) -> str | None:
    return None if secret is None else str(secret.get_secret_value())
