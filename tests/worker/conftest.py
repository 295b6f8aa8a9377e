"""Fixtures for worker tests: a file:// store, the tiny water box, a moto S3 server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaymd.demo.water_box import write_water_box
from relaymd.models import StorageAccess


@pytest.fixture(scope="session")
def water_box_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~200-atom TIP3P box as System/State/Integrator XML, generated once per session."""
    directory = tmp_path_factory.mktemp("water-box")
    write_water_box(directory, box_nm=1.3, seed=11, platform="Reference")
    return directory


@pytest.fixture
def bundle_dir(water_box_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "inputs"
    shutil.copytree(water_box_dir, target)
    return target


@pytest.fixture
def file_access(tmp_path: Path) -> StorageAccess:
    root = tmp_path / "store"
    root.mkdir()
    return StorageAccess(url=f"file://{root}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def moto_access() -> Iterator[StorageAccess]:
    """A real moto S3 server over HTTP with one bucket."""
    import boto3

    port = _free_port()
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="AKIDWORKERTEST",
            aws_secret_access_key="worker-secret-key-123",
            region_name="us-east-1",
        )
        end = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket="relay")
                break
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
        yield StorageAccess(
            url="s3://relay/test",
            endpoint_url=endpoint,
            region="us-east-1",
            access_key_id="AKIDWORKERTEST",
            secret_access_key="worker-secret-key-123",
            max_attempts=2,
        )
    finally:
        proc.terminate()
        proc.wait(10)
