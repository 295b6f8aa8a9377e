"""SSHTransport against an in-process asyncssh server that asks for a 2FA code (kbd-interactive)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from relaymd.models import ClusterProfile
from relaymd.transport import NeedsAuth, TransportError
from relaymd.transport.base import whole_or_nothing
from relaymd.transport.ssh import SSHTransport

CODE = "246810"


class TwoFactorServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str):  # type: ignore[no-untyped-def]
        return "Duo", "Enter your one-time code", "", [("Verification code: ", False)]

    def validate_kbdint_response(self, username: str, responses):  # type: ignore[no-untyped-def]
        return list(responses) == [CODE]


async def handle(process: asyncssh.SSHServerProcess[str]) -> None:
    script = await process.stdin.read()
    process.stdout.write(f"ran {len(script)} bytes with {process.command}\n")
    process.exit(0)


@contextlib.asynccontextmanager
async def two_factor_login_node(known: Path) -> AsyncIterator[tuple[int, Path]]:
    """A loopback login node asking for CODE; its host key recorded in `known`."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    srv = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[key],
        server_factory=TwoFactorServer,
        process_factory=handle,
    )
    port = srv.sockets[0].getsockname()[1]
    await asyncio.to_thread(
        known.write_text, f"[127.0.0.1]:{port} {key.export_public_key().decode()}"
    )
    try:
        yield port, known
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    async with two_factor_login_node(tmp_path / "known_hosts") as node:
        yield node


def profile(port: int, known: Path) -> ClusterProfile:
    return ClusterProfile.model_validate(
        {
            "name": "clusterA",
            "ssh": {"host": "127.0.0.1", "port": port, "username": "me", "known_hosts": str(known)},
            "scratch": "/scratch",
            "partitions": [{"name": "gpu", "walltime_minutes": 240}],
            "native_worker": ["w"],
        }
    )


async def test_2fa_without_a_person_is_needs_auth(
    server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    transport = SSHTransport(profile(*server), ssh_config=None)
    with pytest.raises(NeedsAuth) as caught:
        await transport.run("true")
    assert "relaymd daemon run" in str(caught.value) and "clusterA" in str(caught.value)
    assert transport.connects == 0


async def test_2fa_answered_on_the_terminal_when_interactive(
    server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    asked: list[tuple[str, bool]] = []

    def prompter(text: str, echo: bool) -> str:
        asked.append((text, echo))
        return CODE

    transport = SSHTransport(profile(*server), ssh_config=None, interactive=True, prompter=prompter)
    try:
        first = await transport.run("echo hi\n")
        await transport.run("echo again\n")
    finally:
        await transport.close()
    assert asked == [("[clusterA] Verification code: ", False)]  # once: the connection is reused
    sent = len(whole_or_nothing("echo hi\n"))
    assert first.stdout.startswith(f"ran {sent} bytes with timeout -k 5 65 bash -s")
    assert transport.connects == 1


class CertificateOnlyServer(asyncssh.SSHServer):
    """A login node that takes user certificates signed by its CA and nothing else (no
    second factor for them): what some 2FA sites issue to registered workstations."""

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False


async def test_a_site_certificate_connects_without_a_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    ca = asyncssh.generate_private_key("ssh-ed25519")
    user_key = asyncssh.generate_private_key("ssh-ed25519")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(f"cert-authority {ca.export_public_key().decode()}")
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    srv = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        server_factory=CertificateOnlyServer,
        process_factory=handle,
        authorized_client_keys=str(authorized),
    )
    port = srv.sockets[0].getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    key_file = tmp_path / "id_ed25519"
    user_key.write_private_key(str(key_file))
    # Beside the key as `<key>-cert.pub`, where ssh and asyncssh both look for it.
    cert = ca.generate_user_certificate(user_key, "me", principals=["me"])
    cert.write_certificate(str(key_file) + "-cert.pub")
    data = profile(port, known).model_dump()
    data["ssh"]["identity_file"] = str(key_file)
    asked: list[str] = []
    transport = SSHTransport(
        ClusterProfile.model_validate(data),
        ssh_config=None,
        prompter=lambda text, echo: asked.append(text) or "",
    )
    try:
        done = await transport.run("true\n")
        await transport.close()
        # Without the certificate the same key is refused: the certificate did the work.
        (tmp_path / "id_ed25519-cert.pub").unlink()
        bare = SSHTransport(ClusterProfile.model_validate(data), ssh_config=None)
        with pytest.raises(TransportError, match="authentication failed"):
            await bare.run("true\n")
        await bare.close()
    finally:
        await transport.close()
        srv.close()
        await srv.wait_closed()
    assert done.stdout.startswith("ran ")
    assert asked == [] and transport.connects == 1


async def test_two_clusters_prompting_at_once_ask_one_after_the_other(
    server: tuple[int, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon connects to every cluster at once; one terminal answers. A second prompt
    must wait for the first, or the code typed for one cluster can reach the other."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    asked: list[str] = []
    asking: list[str] = []
    overlapped: list[str] = []
    other_started = threading.Event()

    def prompter(text: str, echo: bool) -> str:
        if asking:
            overlapped.append(text)  # a prompt while another is still on the terminal
        asked.append(text)
        asking.append(text)
        if len(asked) == 1:
            # The person is still typing the first code: a second prompt now is the bug
            # (fixed, none comes: the wait ends at its timeout).
            other_started.wait(timeout=3)
        else:
            other_started.set()
        asking.remove(text)
        return CODE

    async with two_factor_login_node(tmp_path / "known_hosts_b") as (port_b, known_b):
        data_b = profile(port_b, known_b).model_dump()
        data_b["name"] = "clusterB"
        transports = [
            SSHTransport(profile(*server), ssh_config=None, interactive=True, prompter=prompter),
            SSHTransport(
                ClusterProfile.model_validate(data_b),
                ssh_config=None,
                interactive=True,
                prompter=prompter,
            ),
        ]
        try:
            results = await asyncio.gather(*(t.run("true\n") for t in transports))
        finally:
            for transport in transports:
                await transport.close()
    assert all(r.stdout.startswith("ran ") for r in results)
    assert sorted(asked) == ["[clusterA] Verification code: ", "[clusterB] Verification code: "]
    assert overlapped == []
