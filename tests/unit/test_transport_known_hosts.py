"""Which known_hosts files a connection is checked against when the profile names none: those
OpenSSH itself would read for the host (UserKnownHostsFile and GlobalKnownHostsFile, each with
OpenSSH's default when the ssh config leaves it unset). A real asyncssh server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from relaymd.models import ClusterProfile
from relaymd.transport import HostKeyRejected, ssh_options
from relaymd.transport.ssh import SSHTransport


class OpenServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: only the host key check is under test


async def _handle(process: asyncssh.SSHServerProcess[str]) -> None:
    await process.stdin.read()
    process.stdout.write("here\n")
    process.exit(0)


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[int, str]]:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~/.ssh/known_hosts under tmp_path
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    # /etc/ssh/ssh_known_hosts cannot be written by a test: the same default, under tmp_path.
    etc = tmp_path / "etc"
    etc.mkdir()
    monkeypatch.setattr(
        ssh_options, "GLOBAL_KNOWN_HOSTS", (etc / "ssh_known_hosts", etc / "ssh_known_hosts2")
    )
    key = asyncssh.generate_private_key("ssh-ed25519")
    srv = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[key], server_factory=OpenServer, process_factory=_handle
    )
    port = srv.sockets[0].getsockname()[1]
    yield port, f"[127.0.0.1]:{port} {key.export_public_key().decode()}"
    srv.close()
    await srv.wait_closed()


def _config(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "ssh_config"
    path.write_text(f"Host login\n  HostName 127.0.0.1\n  Port {port}\n  User me\n{extra}")
    return path


def _profile() -> ClusterProfile:
    return ClusterProfile.model_validate(
        {
            "name": "siteA",
            "ssh": {"host": "login"},
            "scratch": "/scratch",
            "partitions": [{"name": "gpu", "walltime_minutes": 60}],
            "native_worker": ["w"],
        }
    )


async def _run(config: Path) -> str:
    transport = SSHTransport(_profile(), ssh_config=config)
    try:
        return (await transport.run("true\n")).stdout
    finally:
        await transport.close()


async def test_the_sites_global_known_hosts_file_is_read_as_openssh_does(
    server: tuple[int, str], tmp_path: Path
) -> None:
    port, entry = server
    # A managed workstation: the admins put the login node's key in the global file only.
    (tmp_path / "etc" / "ssh_known_hosts").write_text(entry)
    assert await _run(_config(tmp_path, port)) == "here\n"


async def test_a_global_file_in_the_ssh_config_keeps_the_users_own(
    server: tuple[int, str], tmp_path: Path
) -> None:
    port, entry = server
    (tmp_path / "home" / ".ssh" / "known_hosts").write_text(entry)
    site = tmp_path / "site_known_hosts"
    site.write_text("")
    config = _config(tmp_path, port, f"  GlobalKnownHostsFile {site}\n")
    assert await _run(config) == "here\n"


async def test_a_key_in_none_of_the_files_is_refused(
    server: tuple[int, str], tmp_path: Path
) -> None:
    port, _ = server
    (tmp_path / "etc" / "ssh_known_hosts").write_text("")
    with pytest.raises(HostKeyRejected):
        await _run(_config(tmp_path, port))
