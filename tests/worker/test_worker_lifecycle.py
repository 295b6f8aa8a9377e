"""Worker lifecycle without MD: idle exit, credentials, bad inputs end in `failed` events."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from relaymd.mailbox.models import EventKind
from relaymd.models import StorageAccess
from relaymd.storage.keys import bundle_key, checkpoints_prefix
from tests.worker.worker_harness import Allocation, Relay


def test_idle_timeout_appends_idle_exit_and_exits_zero(
    tmp_path: Path, file_access: StorageAccess
) -> None:
    alloc = Allocation(tmp_path, "idle1", file_access)
    alloc.start(idle_timeout=1.0)
    assert alloc.wait_exit() == 0
    events = alloc.events()
    assert [e.kind for e in events] == [EventKind.IDLE_EXIT]
    assert "no assignment" in (events[0].reason or "")
    heartbeat = alloc.heartbeat()
    assert heartbeat is not None and heartbeat.state == "exiting" and heartbeat.seq >= 2
    assert heartbeat.allocation_id == "idle1" and heartbeat.pid > 0


def test_refuses_group_readable_credentials(tmp_path: Path, file_access: StorageAccess) -> None:
    alloc = Allocation(tmp_path, "creds1", file_access)
    os.chmod(alloc.dir / "credentials", 0o640)
    proc = alloc.start(idle_timeout=1.0)
    assert alloc.wait_exit() == 2
    assert proc.stderr is not None
    message = proc.stderr.read().decode()
    assert "credentials" in message and "chmod 600" in message
    assert alloc.events() == []


def test_help_does_not_import_openmm() -> None:
    import subprocess
    import sys

    code = (
        "import sys, contextlib, io\n"
        "from worker_entry.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "print('openmm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _unsafe_bundle(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        data = b"pwned"
        info = tarfile.TarInfo("../escape.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


ENGINE = {"kind": "openmm", "total_steps": 100, "checkpoint_every_steps": 10}


@pytest.mark.parametrize("case", ["unsafe_bundle", "malformed", "unknown_engine", "missing_file"])
def test_bad_input_fails_cleanly_without_uploading(
    case: str, tmp_path: Path, file_access: StorageAccess, bundle_dir: Path
) -> None:
    relay = Relay(tmp_path, file_access, "job-bad")
    if case == "unsafe_bundle":
        archive = tmp_path / "evil.tar.gz"
        _unsafe_bundle(archive)
        relay.bundle = relay.store.put_file(bundle_key(relay.job_id), archive)
    else:
        if case == "missing_file":
            (bundle_dir / "integrator.xml").unlink()
        relay.upload_bundle(bundle_dir)
    alloc = relay.allocation()
    assignment = relay.assignment(alloc, ENGINE)
    if case == "malformed":
        data = assignment.model_dump(mode="json")
        data["epoch"] = "not-a-number"
        import json

        alloc.write_raw_assignment(json.dumps(data).encode())
    elif case == "unknown_engine":
        data = assignment.model_dump(mode="json")
        data["engine"] = {"kind": "gromacs", "tpr": "topol.tpr"}
        import json

        alloc.write_raw_assignment(json.dumps(data).encode())
    else:
        alloc.assign(assignment)
    alloc.start(idle_timeout=2.0)
    failed = alloc.wait_event({EventKind.FAILED}, timeout=60)
    assert alloc.wait_exit(60) == 0
    reason = failed.reason or ""
    expected = {
        "unsafe_bundle": "escape.txt",
        "malformed": "epoch",
        "unknown_engine": "gromacs",
        "missing_file": "integrator.xml",
    }[case]
    assert expected in reason, reason
    assert failed.job_id == "job-bad" and failed.retryable is False
    kinds = [e.kind for e in alloc.events()]
    assert kinds.count(EventKind.FAILED) == 1  # no crash loop: the same file is not retried
    assert kinds[-1] is EventKind.IDLE_EXIT
    assert relay.store.list_keys(checkpoints_prefix(relay.job_id)) == []
    assert not (tmp_path / "alloc" / "escape.txt").exists()
    assert not (alloc.work_dir.parent / "escape.txt").exists()


def test_credentials_file_mode_is_checked_not_just_existence(tmp_path: Path) -> None:
    from worker_entry.credentials import CredentialsError, load_credentials

    folder = tmp_path / "a"
    folder.mkdir()
    with pytest.raises(CredentialsError, match="missing"):
        load_credentials(folder)
    path = folder / "credentials"
    path.write_text('{"url": "file:///tmp/x", "secret_access_key": "very-secret"}')
    os.chmod(path, 0o604)
    with pytest.raises(CredentialsError, match="group/others"):
        load_credentials(folder)
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    access = load_credentials(folder)
    assert access.secret_access_key is not None
