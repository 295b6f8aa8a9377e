"""Fixtures for worker tests: a file:// store, the tiny water box, a moto S3 server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaymd.demo.water_box import write_water_box
from relaymd.models import StorageAccess
from tests.moto_server import run_moto_server


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


@pytest.fixture
def moto_access() -> Iterator[StorageAccess]:
    """A real moto S3 server over HTTP with one bucket."""
    with run_moto_server() as moto:
        yield moto.access(bucket=moto.create_bucket("relay"), prefix="test", max_attempts=2)
