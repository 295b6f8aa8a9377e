"""`.relaymdignore` leaves files out of the job bundle as git would leave them out of a commit
(git itself is the judge), and `submit` says what it left out."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

import pytest

from relaymd.storage.bundle import pack_bundle, scan_job_folder

TREE = [
    "system.xml",
    "notes.txt",
    "run.log",
    "logs/a.log",
    "logs/keep.log",
    "build/out.bin",
    "src/build/inner.bin",
    "src/main.py",
    "src/deep/x/main.py",
    "data/raw/big.dcd",
    "data/raw/small.dcd",
    "data/ref.pdb",
    "top.dcd",
    "doc/a.md",
    "doc/sub/b.md",
    "[x].txt",
    "#hash",
    "spaced name ",
]
PATTERNS = """\
# comments and blank lines do nothing

*.log
!keep.log
/build/
data/**/*.dcd
!data/raw/small.dcd
doc/**
!doc/sub/
?op.dcd
\\[x].txt
\\#hash
src/**/main.py
"""


def _make(root: Path) -> None:
    for name in TREE:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    (root / ".relaymdignore").write_text(PATTERNS)


def _git_kept(root: Path) -> set[str]:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run([git, "init", "-q", str(root)], check=True, env=env)
    listed = subprocess.run(
        [
            git,
            "-C",
            str(root),
            "ls-files",
            "--others",
            "-z",
            "--exclude-per-directory=.relaymdignore",
        ],
        check=True,
        capture_output=True,
        env=env,
    ).stdout.decode()
    shutil.rmtree(root / ".git")
    return {name for name in listed.split("\0") if name}


def test_left_out_files_are_exactly_what_git_leaves_out(tmp_path: Path) -> None:
    root = tmp_path / "job"
    _make(root)
    expected = _git_kept(root)
    archive = tmp_path / "b.tar.gz"
    pack_bundle(root, archive)
    with tarfile.open(archive) as tar:
        packed = {m.name for m in tar.getmembers() if m.isfile()}
    assert packed == expected
    assert "logs/keep.log" in packed and "data/raw/small.dcd" in packed  # negations work
    assert "src/build/inner.bin" in packed  # /build/ is anchored


def test_scan_names_what_it_left_out_and_skips_unpackable_ignored_entries(tmp_path: Path) -> None:
    root = tmp_path / "job"
    _make(root)
    (root / "cache").mkdir()
    # A socket cannot go in a bundle; ignored, it is not even looked at.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "cache" / "sock"))
        (root / ".relaymdignore").write_text(PATTERNS + "cache/\n")
        scanned = scan_job_folder(root)
    assert "cache/" in scanned.left_out and "build/" in scanned.left_out
    assert "run.log" in scanned.left_out
    assert not any(name.startswith("cache/") for e in scanned.entries for name in [e.name])
