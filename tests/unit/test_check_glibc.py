"""packaging/check-glibc.py against ELF files whose glibc needs readelf (another tool) reports."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "packaging" / "check-glibc.py"
ELF = Path(shutil.which("ls") or "/bin/ls").resolve()

pytestmark = pytest.mark.skipif(
    shutil.which("objdump") is None or shutil.which("readelf") is None, reason="needs binutils"
)


def readelf_newest(path: Path) -> tuple[int, ...]:
    out = subprocess.run(
        ["readelf", "--version-info", "--wide", str(path)], capture_output=True, text=True
    ).stdout
    return max(tuple(int(p) for p in m.split(".")) for m in re.findall(r"GLIBC_([\d.]+)", out))


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def onedir(tmp_path: Path) -> Path:
    folder = tmp_path / "relaymd-onedir"
    (folder / "_internal").mkdir(parents=True)
    shutil.copy(ELF, folder / "relaymd")
    shutil.copy(ELF, folder / "_internal" / "libfake.so")
    (folder / "_internal" / "base_library.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    return folder


def test_newest_need_is_reported_and_enforced(onedir: Path) -> None:
    newest = readelf_newest(ELF)
    shown = ".".join(map(str, newest))
    ok = check(str(onedir), "--max", shown)
    assert ok.returncode == 0, ok.stdout
    assert f"needs GLIBC_{shown} at most" in ok.stdout and "2 ELF files read" in ok.stdout
    older = f"{newest[0]}.{newest[1] - 1}"
    too_new = check(str(onedir), "--max", older)
    assert too_new.returncode == 1
    assert f"needs GLIBC_{shown}: _internal/libfake.so" in too_new.stdout
    assert "will not start on systems with glibc" in too_new.stdout
    reported = check(str(onedir), "--max", older, "--report-only")
    assert reported.returncode == 0 and f"limit {older}; 2 above it" in reported.stdout


def test_a_folder_without_elf_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = check(str(tmp_path / "empty"))
    assert done.returncode == 2 and "no bundled ELF files" in done.stdout
