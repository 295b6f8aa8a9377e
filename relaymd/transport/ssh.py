"""Commands on a login node over ONE long-lived asyncssh connection (ADR 0004).

Lazy connect, reused by every call, reconnected (with backoff) when it drops (`ssh_connection`).
~/.ssh/config and ssh-agent are honoured; explicit profile fields override them. Host keys are
checked strictly against the profile's known_hosts, else the ssh config's
UserKnownHostsFile/GlobalKnownHostsFile, else ~/.ssh/known_hosts (`ssh_options`): nothing is
trusted on first use, and the check is never turned off.
"""

from __future__ import annotations

import asyncio
import math
from functools import partial
from pathlib import Path

import asyncssh

from relaymd.logging import get_logger
from relaymd.models import ClusterProfile
from relaymd.transport.base import (
    CommandResult,
    HostUnreachable,
    RemoteTimeout,
    Transport,
    TransportError,
    whole_or_nothing,
)
from relaymd.transport.ssh_auth import Prompter, RelayClient, terminal_prompter
from relaymd.transport.ssh_connection import SSHConnection
from relaymd.transport.ssh_options import SSHConfigArg, SSHEndpoint

log = get_logger(__name__)

# The remote `timeout` outlives ours by this much, so a command we abandon dies there too.
REMOTE_KILL_GRACE_S = 5
CONNECT_ATTEMPTS = 3


class SSHTransport(Transport):
    def __init__(
        self,
        profile: ClusterProfile,
        *,
        interactive: bool = False,
        ssh_config: SSHConfigArg = True,
        prompter: Prompter = terminal_prompter,
        connect_attempts: int = CONNECT_ATTEMPTS,
    ) -> None:
        """`ssh_config`: True = ~/.ssh/config when it exists, a path = that file, None = none."""
        if profile.ssh is None:
            raise TransportError(
                f"cluster {profile.name}: transport `ssh` needs an `ssh:` section",
                cluster=profile.name,
            )
        self.cluster = profile.name
        self.default_timeout = profile.command_timeout_s
        self.endpoint = SSHEndpoint(profile.ssh, ssh_config)
        self.connection = SSHConnection(
            profile.name,
            self.endpoint,
            new_client=partial(
                RelayClient, profile.name, interactive=interactive, prompter=prompter
            ),
            connect_attempts=connect_attempts,
        )
        self._channels = asyncio.Semaphore(profile.max_channels)

    @property
    def known_hosts(self) -> Path:
        """The known_hosts file messages name (and `ssh-keyscan >>` appends to)."""
        return self.endpoint.known_hosts

    @property
    def connects(self) -> int:
        """Successful connects so far: tests prove the connection is reused."""
        return self.connection.connects

    def target(self) -> tuple[str, int]:
        """(host, port) after ~/.ssh/config aliases, for messages and known_hosts lookups."""
        return self.endpoint.target()

    # -- commands ------------------------------------------------------------------------
    async def check(self) -> None:
        await self.connection.get()

    async def run(self, script: str, *, timeout: float | None = None) -> CommandResult:  # noqa: ASYNC109
        limit = self.default_timeout if timeout is None else timeout
        self.round_trips += 1
        # The remote `timeout` kills a command we gave up on, so it cannot pile up there.
        command = (
            f"timeout -k {REMOTE_KILL_GRACE_S} {math.ceil(limit) + REMOTE_KILL_GRACE_S} bash -s"
        )
        async with self._channels:
            await self.connection.get()  # connect failures keep their own type and timeout
            try:
                return await asyncio.wait_for(self._run_once(command, script), limit)
            except TimeoutError:
                raise RemoteTimeout(
                    f"cluster {self.cluster}: a remote command ran past its {limit:g} s timeout"
                    " and was abandoned; the login node may be overloaded (raise"
                    " `command_timeout_s` in the profile if this repeats)",
                    cluster=self.cluster,
                ) from None

    async def _run_once(self, command: str, script: str) -> CommandResult:
        process = await self._open(command, script)
        try:
            done = await process.wait(check=False)
        except (asyncssh.Error, OSError) as exc:
            self.connection.drop()
            raise HostUnreachable(
                f"cluster {self.cluster}: connection lost during a command ({exc}); it may or"
                " may not have run; the daemon re-reads the cluster next cycle",
                cluster=self.cluster,
            ) from exc
        finally:
            process.close()
        status = done.exit_status
        if status is None or status < 0:
            status = 255  # killed by a signal or the channel closed without a status
        return CommandResult(
            exit_status=status, stdout=_text(done.stdout), stderr=_text(done.stderr)
        )

    async def _open(self, command: str, script: str) -> asyncssh.SSHClientProcess[str]:
        # Nothing has run until the channel opens: one reconnect here is always safe.
        for attempt in range(2):
            conn = await self.connection.get()
            try:
                return await conn.create_process(
                    command, input=whole_or_nothing(script), errors="replace"
                )
            except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, OSError) as exc:
                self.connection.drop()
                if attempt == 1:
                    raise HostUnreachable(
                        f"cluster {self.cluster}: cannot open an SSH channel ({exc}); the"
                        " daemon retries next cycle",
                        cluster=self.cluster,
                    ) from exc
                log.info("ssh_reconnecting", cluster=self.cluster, error=str(exc))
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.connection.close()


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
