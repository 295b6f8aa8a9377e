"""The worker image's recipe, installed with pip alone into a clean venv (no container engine):
its `relaymd-worker` answers --help and relays a real Reference-platform segment.

packaging/worker-venv.sh installs the wheel and the locked requirement set exactly as the
Dockerfile does, so a broken image recipe (a missing dependency, a module left out of the
wheel) fails here. The worker runs from that venv, outside the checkout, so nothing of the
source tree can stand in for what the wheel lacks.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from relaymd.mailbox.models import EventKind
from relaymd.models import StorageAccess
from tests.worker.worker_harness import REPO, Allocation, Relay

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("worker-image")
    done = subprocess.run(
        ["bash", str(REPO / "packaging" / "worker-venv.sh"), str(dest)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return dest / "venv"


class ImageAllocation(Allocation):
    """An allocation whose worker is the venv's `relaymd-worker`, run outside the checkout."""

    venv: Path

    def start(self, *extra: str, idle_timeout: float = 30.0) -> subprocess.Popen[bytes]:
        args = [
            str(self.venv / "bin" / "relaymd-worker"),
            "--alloc-dir", str(self.dir),
            "--heartbeat-interval", "0.2",
            "--idle-timeout", str(idle_timeout),
            "--platform", "Reference",
            "--work-dir", str(self.work_dir),
            *extra,
        ]  # fmt: skip
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "RELAYMD_", "VIRTUAL_ENV", "PYTHON"))
        }
        self.proc = subprocess.Popen(
            args, cwd=self.dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return self.proc


class ImageRelay(Relay):
    venv: Path

    def allocation(self) -> Allocation:
        self.allocations += 1
        alloc = ImageAllocation(self.root, f"a{self.allocations:03d}", self.access)
        alloc.venv = self.venv
        return alloc


def test_image_worker_answers_help(image_venv: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(image_venv / "bin" / "relaymd-worker"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--alloc-dir" in done.stdout
    # The operator side is not part of the image (Dockerfile: worker extra only).
    missing = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", "import asyncssh"],
        capture_output=True,
        cwd=tmp_path,
        check=False,
    )
    assert missing.returncode != 0


def test_image_worker_runs_a_reference_segment(
    image_venv: Path, tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    relay = ImageRelay(tmp_path / "relay", file_access, "job-image")
    relay.venv = image_venv
    relay.upload_bundle(bundle_dir)
    engine = {
        "kind": "openmm",
        "total_steps": 40,
        "checkpoint_every_steps": 20,
        "report_every_steps": 10,
        "dcd_every_steps": 20,
        "topology": "topology.pdb",
    }
    _, end = relay.run_segment(engine, None)
    assert end.kind is EventKind.COMPLETED and end.step == 40, end
    # The verdict is the bytes in the store, not the worker's word.
    keys = relay.store.list_keys(f"jobs/{relay.job_id}/")
    assert any(k.endswith(".dcd") for k in keys), keys
    assert relay.pointer is not None and relay.pointer.step == 40
