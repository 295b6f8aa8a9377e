"""Ctrl-C (a real SIGINT to a real `relaymd` process) during submit and download.

Submit: packing and upload stop, what was uploaded is deleted, nothing is registered, exit
130. Download: no checkpoint folder is left that holds a manifest without all its files.
The signal is sent once the slow phase has visibly started (its temporary file exists), so
the verdict never depends on timing; the verdict is read from the bucket and the database.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from relaymd.models import CheckpointManifest, CheckpointRef, ManifestFile
from relaymd.state import StateStore
from relaymd.storage import keys
from relaymd.storage.file import FileStore
from tests.support.cli_env import (
    RELAYMD,
    TINY_SPEC,
    CliEnv,
    job_count,
    make_job_dir,
    stored_objects,
)

MIB = 1 << 20


def _incompressible(path: Path, mib: int) -> None:
    """`mib` MiB that gzip cannot shrink (a random MiB repeats beyond its 32 KiB window)."""
    block = os.urandom(MIB)
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(block)


def _wait_then_sigint(
    proc: subprocess.Popen[str], started: Callable[[], bool], what: str
) -> tuple[int, str]:
    deadline = time.monotonic() + 300
    while not started():
        if proc.poll() is not None:
            raise AssertionError(f"{what} never started; exit {proc.returncode}: {proc.stderr}")
        assert time.monotonic() < deadline, f"{what} never started"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    return proc.returncode, stderr


def _big_job(cli: CliEnv) -> Path:
    job = make_job_dir(cli.root, "big", TINY_SPEC.format(title="big"))
    _incompressible(job / "trajectory.bin", 192)
    return job


def _submit(cli: CliEnv, job: Path, tmp: Path) -> subprocess.Popen[str]:
    tmp.mkdir(exist_ok=True)
    return subprocess.Popen(
        [str(RELAYMD), "submit", str(job)],
        env={**cli.env, "TMPDIR": str(tmp)},
        cwd=cli.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("phase", ["packing", "upload"])
def test_ctrl_c_during_submit_leaves_nothing(cli: CliEnv, phase: str) -> None:
    job = _big_job(cli)
    tmp = cli.root / "tmp"
    proc = _submit(cli, job, tmp)

    def packing() -> bool:
        return any(p.stat().st_size > 0 for p in tmp.glob("relaymd-submit-*/bundle.tar.gz"))

    def uploading() -> bool:
        return any(stored_objects(cli))

    code, stderr = _wait_then_sigint(proc, packing if phase == "packing" else uploading, phase)
    assert code == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert job_count(cli) == 0
    assert stored_objects(cli) == []  # no bundle, no half-written upload
    assert list(tmp.iterdir()) == []  # the packing folder is gone too


def _job_with_big_checkpoint(cli: CliEnv) -> str:
    small = make_job_dir(cli.root, "small", TINY_SPEC.format(title="small"))
    done = cli.run("submit", str(small), "--json")
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["submitted"][0]["job_id"]
    # A checkpoint as a worker writes it: files first, manifest last.
    store = FileStore(cli.storage_dir)
    prefix = keys.checkpoint_prefix(job_id, 1, 3)
    files = []
    for name, mib in (("a-state.xml", 1), ("z-big.chk", 160)):
        local = cli.root / name
        _incompressible(local, mib)
        ref = store.put_file(prefix + name, local)
        files.append(ManifestFile(path=name, sha256=ref.sha256, size=ref.size))
    manifest = CheckpointManifest(
        job_id=job_id, epoch=1, seq=3, step=300, engine="openmm", files=files
    )
    mref = store.put_bytes(keys.manifest_key(prefix), manifest.model_dump_json().encode())
    with StateStore.open(cli.db) as state:
        job = state.get_job(job_id)
        assert job is not None
        job.checkpoint = CheckpointRef(
            epoch=1, seq=3, step=300, prefix=prefix, manifest_sha256=mref.sha256
        )
        state.update_job(job)
    return job_id


def test_ctrl_c_during_download_leaves_no_complete_looking_checkpoint(cli: CliEnv) -> None:
    job_id = _job_with_big_checkpoint(cli)
    dest = cli.root / "results"
    proc = subprocess.Popen(
        [str(RELAYMD), "jobs", "download", job_id, "--dest", str(dest), "--no-outputs"],
        env=cli.env,
        cwd=cli.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def big_file_started() -> bool:
        return any("z-big.chk" in p.name for p in dest.rglob("*"))

    code, stderr = _wait_then_sigint(proc, big_file_started, "the checkpoint download")
    assert code == 130, stderr
    assert "Traceback" not in stderr
    # Whatever is left must not look like a complete checkpoint: a manifest.json anywhere
    # under checkpoint/ comes with every file it lists, with the right sha256.
    for manifest_path in (dest / "checkpoint").rglob("manifest.json") if dest.exists() else []:
        manifest = CheckpointManifest.model_validate_json(manifest_path.read_bytes())
        for item in manifest.files:
            local = manifest_path.parent / item.path
            assert local.is_file(), f"{manifest_path} lists {item.path}, which is missing"
            assert hashlib.sha256(local.read_bytes()).hexdigest() == item.sha256

    # Done again without interruption, the download is complete and verified.
    done = cli.run("jobs", "download", job_id, "--dest", str(dest), "--no-outputs")
    assert done.returncode == 0, done.stderr
    final = dest / "checkpoint" / "1-3"
    assert sorted(p.name for p in final.iterdir()) == ["a-state.xml", "manifest.json", "z-big.chk"]


def test_ctrl_c_during_s3_multipart_upload_leaves_no_object_or_part(cli: CliEnv) -> None:
    from tests.moto_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, run_moto_server

    job = _big_job(cli)
    with run_moto_server() as moto:
        bucket = moto.create_bucket()
        s3 = moto.client()
        cli.config.write_text(
            cli.config.read_text().replace(
                f"url: file://{cli.data_dir}/storage",
                f"url: s3://{bucket}/relay\n  endpoint_url: {moto.endpoint_url}\n"
                "  region: us-east-1\n  multipart_threshold_mib: 8",
            )
        )
        cli.env.update(
            RELAYMD_S3_ACCESS_KEY_ID=ACCESS_KEY_ID, RELAYMD_S3_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY
        )
        proc = _submit(cli, job, cli.root / "tmp")

        def first_part_uploaded() -> bool:
            uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            return any(
                s3.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts")
                for u in uploads
            )

        code, stderr = _wait_then_sigint(proc, first_part_uploaded, "the multipart upload")
        assert code == 130, stderr
        assert "interrupted" in stderr and "Traceback" not in stderr
        # Stopped, not retried: a cancelled upload used to be retried with backoff until
        # the retries ran out, long after Ctrl-C.
        assert "storage_retry" not in stderr, stderr
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert job_count(cli) == 0
