"""`--mailbox s3://bucket/prefix/mailbox/<allocation_id>` (or file://): a worker without
shared scratch (ADR 0022).

The worker itself is unchanged: it runs on a private local folder named after the allocation,
and a MailboxMirror thread keeps that folder and the bucket in step. It GETs what the daemon
writes (assignment.json, control.json, credentials) every `pull_interval_s` and writes a local
copy only when the bytes changed (removing it when the daemon removed the object); it PUTs
what the worker writes (heartbeat.json, events.jsonl, the tail of worker.log) when the local
file changed. The bucket is reached with the operator's usual S3 settings from the
environment, since the credentials file itself comes through the mailbox.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, SecretStr

from relaymd.mailbox.files import atomic_write_bytes
from relaymd.mailbox.layout import (
    ASSIGNMENT_FILE,
    CONTROL_FILE,
    CREDENTIALS_FILE,
    EVENTS_FILE,
    HEARTBEAT_FILE,
    WORKER_LOG_FILE,
)
from relaymd.mailbox.models import Heartbeat, WorkerState
from relaymd.models import StorageAccess
from relaymd.storage import ObjectNotFound, ObjectStore, StorageError, open_store
from worker_entry.logging import add_secret, get_logger
from worker_entry.provider import provider_machine_id
from worker_entry.version import worker_version

log = get_logger(__name__)

DAEMON_FILES = (ASSIGNMENT_FILE, CONTROL_FILE, CREDENTIALS_FILE)
# The daemon reads only the last few KiB of worker.log: a tail this long is plenty to send.
LOG_PUSH_BYTES = 64 << 10


class MailboxURLError(ValueError):
    pass


def mailbox_access(url: str, env: dict[str, str]) -> StorageAccess:
    """The StorageAccess for `url`, an s3:// or file:// mailbox whose last part is the
    allocation id; s3:// takes endpoint, region and keys from the usual AWS variables."""
    if not url.startswith(("s3://", "file://")):
        raise MailboxURLError(
            f"--mailbox {url!r}: use s3://bucket/prefix/mailbox/<allocation_id> or "
            "file:///absolute/path/mailbox/<allocation_id>"
        )
    if not url.rstrip("/").rsplit("/", 1)[-1] or url.rstrip("/").endswith(":/"):
        raise MailboxURLError(f"--mailbox {url!r} does not end in an allocation id")
    if url.startswith("file://"):
        return StorageAccess(url=url.rstrip("/"))
    key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    for value in (key_id, secret):
        if value:
            add_secret(value)
    return StorageAccess(
        url=url.rstrip("/"),
        endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        access_key_id=SecretStr(key_id) if key_id else None,
        secret_access_key=SecretStr(secret) if secret else None,
    )


def local_mailbox_dir(url: str) -> Path:
    """A private folder `<tmp>/relaymd-mailbox-*/<allocation_id>` for the worker to run on."""
    allocation_id = url.rstrip("/").rsplit("/", 1)[-1]
    base = Path(tempfile.mkdtemp(prefix="relaymd-mailbox-", dir=os.environ.get("TMPDIR")))
    local = base / allocation_id
    local.mkdir(mode=0o700)
    return local


class _Seen(BaseModel):
    stamp: tuple[int, int, int] | None = None  # (inode, mtime_ns, size) last pushed


class MailboxMirror:
    """Keeps a local mailbox folder and its copy in the bucket in step, in one thread."""

    def __init__(self, store: ObjectStore, local_dir: Path, pull_interval_s: float) -> None:
        self.store = store
        self.dir = local_dir
        self.pull_interval_s = pull_interval_s
        self._pulled: dict[str, bytes] = {}
        self._pushed: dict[str, _Seen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mailbox-mirror", daemon=True)

    def pull(self) -> None:
        """What the daemon wrote, copied here when it changed; removed when it is gone. The
        worker reads its credentials once, at start: once here they are not fetched again."""
        have_credentials = CREDENTIALS_FILE in self._pulled
        for name in DAEMON_FILES[:2] if have_credentials else DAEMON_FILES:
            try:
                data: bytes | None = self.store.get_bytes(name)
            except ObjectNotFound:
                data = None
            if data == self._pulled.get(name):
                continue
            path = self.dir / name
            if data is None:
                path.unlink(missing_ok=True)
                self._pulled.pop(name, None)
            else:
                atomic_write_bytes(path, data, 0o600)
                self._pulled[name] = data

    def push(self, names: tuple[str, ...] = (HEARTBEAT_FILE, EVENTS_FILE, WORKER_LOG_FILE)) -> None:
        """What the worker wrote, sent when the local file changed since the last send."""
        for name in names:
            path = self.dir / name
            try:
                stat = path.stat()
                stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                if self._pushed.get(name, _Seen()).stamp == stamp:
                    continue
                with path.open("rb") as handle:
                    if name == WORKER_LOG_FILE:
                        handle.seek(max(0, stat.st_size - LOG_PUSH_BYTES))
                    data = handle.read()
            except FileNotFoundError:
                continue
            self.store.put_bytes(name, data)
            self._pushed[name] = _Seen(stamp=stamp)

    def _loop(self) -> None:
        next_pull = 0.0
        while not self._stop.is_set():
            try:
                self.push((HEARTBEAT_FILE, EVENTS_FILE))
                if self._stop.wait(0) or time.monotonic() >= next_pull:
                    self.push((WORKER_LOG_FILE,))
                    self.pull()
                    next_pull = time.monotonic() + self.pull_interval_s
            except (StorageError, OSError) as exc:
                # The bucket is unreachable for a while: the worker keeps running and the
                # daemon sees its heartbeat freeze; the next round tries again.
                log.warning("mailbox_sync_failed", error=str(exc))
            self._stop.wait(min(0.2, self.pull_interval_s))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then send what the worker wrote last (its final events)."""
        self._stop.set()
        self._thread.join()
        try:
            self.push()
        except (StorageError, OSError) as exc:
            log.warning("mailbox_final_push_failed", error=str(exc))


def open_mailbox(url: str) -> tuple[ObjectStore, Path]:
    """The mailbox's store and the local folder the worker will run on."""
    store = open_store(mailbox_access(url, dict(os.environ)))
    return store, local_mailbox_dir(url)


def announce(mirror: MailboxMirror, deadline: datetime | None) -> None:
    """A first heartbeat (seq 0, starting, no job) before the worker proper starts: how a
    worker nobody submitted becomes known to a daemon that watches the bucket (ADR 0022)."""
    beat = Heartbeat(
        allocation_id=mirror.dir.name,
        seq=0,
        state=WorkerState.STARTING,
        deadline=deadline,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        worker_version=worker_version(),
        machine_id=provider_machine_id(),
    )
    atomic_write_bytes(mirror.dir / HEARTBEAT_FILE, beat.model_dump_json().encode())


def wait_for_credentials(mirror: MailboxMirror, timeout_s: float, stop: threading.Event) -> bool:
    """Pull until the daemon has written the credentials (a worker may start before the daemon
    knows of it); False if they did not come within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            mirror.pull()
            mirror.push()
        except StorageError as exc:
            log.warning("mailbox_sync_failed", error=str(exc))
        if (mirror.dir / CREDENTIALS_FILE).exists():
            return True
        if time.monotonic() >= deadline or stop.wait(mirror.pull_interval_s):
            return False


def run_with_mailbox(
    url: str,
    pull_interval_s: float,
    wait_s: float,
    deadline: datetime | None,
    run: Callable[[Path], int],
) -> int:
    """Open the mailbox at `url`, announce this worker, wait for the daemon's credentials,
    then `run(local_dir)` (the unchanged worker) with the mirror running; the last events are
    sent at the end."""
    store, local = open_mailbox(url)
    mirror = MailboxMirror(store, local, pull_interval_s)
    announce(mirror, deadline)
    if not wait_for_credentials(mirror, wait_s, threading.Event()):
        raise MailboxURLError(
            f"--mailbox {url}: no credentials object within {wait_s:.0f}s; the daemon writes "
            "it once it knows this allocation (check that it watches this bucket)"
        )
    mirror.start()
    try:
        return run(local)
    finally:
        mirror.stop()
