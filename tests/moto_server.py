"""moto's S3 server over real HTTP, for tests: `with run_moto_server() as moto: ...`.

Starts `moto_server -H 127.0.0.1 -p <free port>` as a subprocess, waits until it answers,
and stops it afterwards. Any credentials are accepted; `access()` builds a StorageAccess for
a fresh bucket. Import it as `from tests.moto_server import run_moto_server` (the repository
root is on sys.path in pytest and in `python -m bench.<name>`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from relaymd.models import StorageAccess

ACCESS_KEY_ID = "AKIAMOTOTESTKEY0000"
SECRET_ACCESS_KEY = "moto-test-secret-access-key-0000"
REGION = "us-east-1"
# an upper bound: moto imports for seconds on a loaded 2-core machine
STARTUP_TIMEOUT_S = 120.0


def _moto_binary() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server not found: install the dev group (`uv sync`)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    def __init__(self, endpoint_url: str, process: subprocess.Popen[bytes]) -> None:
        self.endpoint_url = endpoint_url
        self.process = process

    def client(self, endpoint_url: str | None = None) -> Any:
        """A plain boto3 S3 client, for setting things up or tampering behind a store's back."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"relaymd-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def access(
        self, bucket: str | None = None, prefix: str = "", **overrides: Any
    ) -> StorageAccess:
        """StorageAccess for `bucket` (created when not given) under `prefix`."""
        bucket = bucket or self.create_bucket()
        fields: dict[str, Any] = {
            "url": f"s3://{bucket}/{prefix}".rstrip("/"),
            "endpoint_url": self.endpoint_url,
            "region": REGION,
            "access_key_id": SecretStr(ACCESS_KEY_ID),
            "secret_access_key": SecretStr(SECRET_ACCESS_KEY),
        }
        fields.update(overrides)
        return StorageAccess(**fields)


def _wait_ready(endpoint: str, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2),
        ):
            return True
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def run_moto_server() -> Iterator[MotoServer]:
    binary = _moto_binary()
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    for _ in range(3):  # another process may take the free port before moto binds it
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        if _wait_ready(endpoint, process):
            break
        process.kill()
        process.wait()
    else:
        raise RuntimeError("moto_server did not start on 127.0.0.1 after 3 tries")
    try:
        yield MotoServer(endpoint, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
