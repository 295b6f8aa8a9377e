"""`relaymd self-update` against a local stand-in for GitHub's releases API and asset downloads.

The "binary" is a small executable script that answers `--version` like relaymd does, so the
whole replace/keep/rollback path runs for real (files, renames, exec) without PyInstaller.
Verdicts come from running the installed file afterwards, not from the command's own report.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from relaymd.cli.updater import platform_asset_name

ASSET = platform_asset_name()


def fake_binary(version: str, *, works: bool = True) -> bytes:
    body = f'echo "relaymd {version}"' if works else 'echo "cannot run" >&2; exit 127'
    return f"#!/bin/sh\n# stands in for the relaymd binary\n{body}\n".encode()


@dataclass
class Asset:
    data: bytes
    truncate: bool = False  # announce the full length, send half, then close


@dataclass
class ReleasesStandIn:
    """Serves /releases/latest, /releases/tags/<tag> and /assets/<tag>/<name>."""

    releases: dict[str, dict[str, Asset]] = field(default_factory=dict)
    latest: str | None = None
    sums_override: dict[str, str] = field(default_factory=dict)
    base: str = ""

    def add(self, tag: str, data: bytes, *, truncate: bool = False, sha: str | None = None) -> None:
        digest = sha or hashlib.sha256(data).hexdigest()
        sums = f"{digest}  {ASSET}\n{'0' * 64}  relaymd-linux-other\n".encode()
        self.releases[tag] = {ASSET: Asset(data, truncate), "SHA256SUMS": Asset(sums)}
        self.latest = tag

    def release_json(self, tag: str) -> bytes:
        assets = [
            {"name": name, "browser_download_url": f"{self.base}/assets/{tag}/{name}"}
            for name in self.releases[tag]
        ]
        return json.dumps({"tag_name": tag, "assets": assets}).encode()


def _handler(stand_in: ReleasesStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, body: bytes, *, truncate: bool = False) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if truncate else body)
            if truncate:
                self.wfile.flush()
                self.close_connection = True

        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if parts == ["releases", "latest"] and stand_in.latest:
                return self._send(stand_in.release_json(stand_in.latest))
            if parts[:2] == ["releases", "tags"] and parts[2:3][0] in stand_in.releases:
                return self._send(stand_in.release_json(parts[2]))
            if parts[0] == "assets" and len(parts) == 3:
                asset = stand_in.releases.get(parts[1], {}).get(parts[2])
                if asset is not None:
                    return self._send(asset.data, truncate=asset.truncate)
            self.send_error(404)

    return Handler


@pytest.fixture
def stand_in() -> Iterator[ReleasesStandIn]:
    state = ReleasesStandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    binary = folder / "relaymd"
    binary.write_bytes(fake_binary("0.1.0"))
    binary.chmod(0o755)
    return binary


def run_cli(*args: str, stand_in: ReleasesStandIn) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RELAYMD_RELEASES_URL": f"{stand_in.base}/releases"}
    return subprocess.run(
        [sys.executable, "-m", "relaymd.cli", "self-update", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def version_of(binary: Path) -> str:
    return subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout


def leftovers(binary: Path) -> list[str]:
    return sorted(p.name for p in binary.parent.iterdir() if p.name.startswith("."))


def test_update_installs_the_verified_release_and_keeps_the_old_binary(
    stand_in: ReleasesStandIn, installed: Path
) -> None:
    stand_in.add("v0.2.0", fake_binary("0.2.0"))
    done = run_cli("--binary", str(installed), "--json", stand_in=stand_in)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["action"], report["current_version"], report["new_version"]) == (
        "updated",
        "0.1.0",
        "0.2.0",
    )
    assert version_of(installed) == "relaymd 0.2.0\n"
    assert version_of(installed.with_name("relaymd.old")) == "relaymd 0.1.0\n"
    assert report["sha256"] == hashlib.sha256(installed.read_bytes()).hexdigest()
    assert leftovers(installed) == []


def test_up_to_date_and_check_change_nothing(stand_in: ReleasesStandIn, installed: Path) -> None:
    stand_in.add("v0.1.0", fake_binary("0.1.0"))
    done = run_cli("--binary", str(installed), stand_in=stand_in)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    stand_in.add("v0.2.0", fake_binary("0.2.0"))
    before = installed.read_bytes()
    checked = run_cli("--binary", str(installed), "--check", "--json", stand_in=stand_in)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["action"] == "available"
    assert installed.read_bytes() == before
    assert not installed.with_name("relaymd.old").exists()


def test_corrupted_download_leaves_the_old_binary_working(
    stand_in: ReleasesStandIn, installed: Path
) -> None:
    stand_in.add("v0.2.0", fake_binary("0.2.0"), sha=hashlib.sha256(b"what was signed").hexdigest())
    done = run_cli("--binary", str(installed), stand_in=stand_in)
    assert done.returncode == 1
    assert "checksum mismatch" in done.stderr and "Traceback" not in done.stderr
    assert version_of(installed) == "relaymd 0.1.0\n"
    assert not installed.with_name("relaymd.old").exists()
    assert leftovers(installed) == []


def test_interrupted_download_leaves_the_old_binary_working(
    stand_in: ReleasesStandIn, installed: Path
) -> None:
    stand_in.add("v0.2.0", fake_binary("0.2.0") + b"#" * 200_000, truncate=True)
    done = run_cli("--binary", str(installed), stand_in=stand_in)
    assert done.returncode == 1
    assert "download of" in done.stderr and "nothing was replaced" in done.stderr
    assert version_of(installed) == "relaymd 0.1.0\n"
    assert leftovers(installed) == []


def test_a_release_binary_that_does_not_run_here_is_not_installed(
    stand_in: ReleasesStandIn, installed: Path
) -> None:
    stand_in.add("v0.2.0", fake_binary("0.2.0", works=False))
    done = run_cli("--binary", str(installed), stand_in=stand_in)
    assert done.returncode == 1
    assert "does not run on this machine" in done.stderr
    assert version_of(installed) == "relaymd 0.1.0\n"


def test_rollback_swaps_back_and_forth(stand_in: ReleasesStandIn, installed: Path) -> None:
    stand_in.add("v0.2.0", fake_binary("0.2.0"))
    assert run_cli("--binary", str(installed), stand_in=stand_in).returncode == 0
    back = run_cli("--binary", str(installed), "--rollback", "--json", stand_in=stand_in)
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["action"] == "rolled-back"
    assert version_of(installed) == "relaymd 0.1.0\n"
    assert version_of(installed.with_name("relaymd.old")) == "relaymd 0.2.0\n"
    assert run_cli("--binary", str(installed), "--rollback", stand_in=stand_in).returncode == 0
    assert version_of(installed) == "relaymd 0.2.0\n"
    assert leftovers(installed) == []


def test_rollback_without_a_previous_binary_is_refused(
    stand_in: ReleasesStandIn, installed: Path
) -> None:
    done = run_cli("--binary", str(installed), "--rollback", stand_in=stand_in)
    assert done.returncode == 1
    assert "no previous binary" in done.stderr
    assert version_of(installed) == "relaymd 0.1.0\n"


def test_a_named_version_is_installed_and_an_unknown_one_is_not_found(
    stand_in: ReleasesStandIn, installed: Path
) -> None:
    stand_in.add("v0.1.5", fake_binary("0.1.5"))
    stand_in.add("v0.2.0", fake_binary("0.2.0"))
    done = run_cli("--binary", str(installed), "--version", "0.1.5", stand_in=stand_in)
    assert done.returncode == 0, done.stderr
    assert version_of(installed) == "relaymd 0.1.5\n"
    missing = run_cli("--binary", str(installed), "--version", "9.9.9", stand_in=stand_in)
    assert missing.returncode == 1
    assert "not found" in missing.stderr
    assert version_of(installed) == "relaymd 0.1.5\n"


def test_running_from_source_is_refused(stand_in: ReleasesStandIn) -> None:
    stand_in.add("v0.2.0", fake_binary("0.2.0"))
    done = run_cli(stand_in=stand_in)
    assert done.returncode == 2
    assert "runs from Python source" in done.stderr and "Traceback" not in done.stderr


def test_platform_asset_names_match_the_release_workflow() -> None:
    assert platform_asset_name("x86_64") == "relaymd-linux-x86_64"
    assert platform_asset_name("arm64") == "relaymd-linux-aarch64"
    assert f"relaymd-linux-{platform.machine()}" == ASSET


FROZEN = Path(__file__).resolve().parents[2] / "dist" / "relaymd"


@pytest.mark.skipif(
    not FROZEN.is_file(), reason="dist/relaymd not built (packaging/build-binary.sh; .ci/run does)"
)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_the_frozen_binary_updates_and_rolls_back_itself(
    stand_in: ReleasesStandIn, tmp_path: Path, as_json: bool
) -> None:
    """A onefile binary keeps reading its own file after the swap: what runs after it (output,
    errors, exit) must not need it. Run the real PyInstaller binary through both swaps."""
    folder = tmp_path / "bin"
    folder.mkdir()
    binary = folder / "relaymd"
    shutil.copy2(FROZEN, binary)
    frozen_version = version_of_flag(binary)
    stand_in.add("v9.0.0", fake_binary("9.0.0"))
    env = {**os.environ, "RELAYMD_RELEASES_URL": f"{stand_in.base}/releases"}
    flags = ["--json"] if as_json else []
    updated = subprocess.run(
        [str(binary), "self-update", *flags], capture_output=True, text=True, env=env, timeout=120
    )
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert "Traceback" not in updated.stderr and "9.0.0" in updated.stdout
    assert version_of(binary) == "relaymd 9.0.0\n"
    backup = folder / "relaymd.old"
    assert version_of_flag(backup) == frozen_version
    # Roll back by running the old (frozen) binary, whose own file the rollback swaps away.
    back = subprocess.run(
        [str(backup), "self-update", "--binary", str(binary), "--rollback", *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert back.returncode == 0, back.stdout + back.stderr
    assert "Traceback" not in back.stderr and "rolled" in back.stdout.replace("-", " ")
    assert version_of_flag(binary) == frozen_version
    assert version_of(backup) == "relaymd 9.0.0\n"


def version_of_flag(binary: Path) -> str:
    return subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True
    ).stdout
