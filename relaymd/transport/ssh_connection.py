"""ONE long-lived asyncssh connection to a login node (ADR 0004), through its ProxyJump hops.

Lazy connect, shared by every caller, reconnected (with backoff) when it drops; ssh-agent and
the ssh config come in through the endpoint's options; host keys are checked strictly.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import asyncssh
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from relaymd.logging import get_logger
from relaymd.transport.base import HostUnreachable
from relaymd.transport.ssh_auth import ClientFactory, RelayClient, unusable_key
from relaymd.transport.ssh_host_keys import (
    host_key_error,
    missing_jump_known_hosts,
    unknown_key_error,
)
from relaymd.transport.ssh_options import SSHEndpoint

log = get_logger(__name__)


def _ignore(_: RelayClient) -> None:
    """A jump host's loss shows up as the login node's connection loss."""


class SSHConnection:
    def __init__(
        self,
        cluster: str,
        endpoint: SSHEndpoint,
        *,
        new_client: ClientFactory,
        connect_attempts: int,
    ) -> None:
        self.cluster = cluster
        self.endpoint = endpoint
        self._new_client = new_client  # one per connection: the login node's and each hop's
        self.connect_attempts = connect_attempts
        self.connects = 0  # successful connects: tests prove the connection is reused
        self._conn: asyncssh.SSHClientConnection | None = None
        self._client: RelayClient | None = None
        self._connect_lock = asyncio.Lock()
        self._jumps: list[asyncssh.SSHClientConnection] = []  # ProxyJump hops, outermost first

    @property
    def is_open(self) -> bool:
        """False once the connection was lost or dropped (the next `get` reconnects)."""
        return self._conn is not None

    async def get(self) -> asyncssh.SSHClientConnection:
        """The open connection, connecting first if there is none."""
        async with self._connect_lock:
            if self._conn is not None:
                return self._conn
            retrying = AsyncRetrying(
                # A connect that timed out already waited long: retry only quick failures.
                stop=stop_after_attempt(self.connect_attempts)
                | stop_after_delay(self.endpoint.settings.connect_timeout_s),
                wait=wait_exponential(multiplier=0.5, max=4),
                retry=retry_if_exception_type(HostUnreachable),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    self._conn = await self._connect_once()
            assert self._conn is not None
            return self._conn

    async def _open_jumps(self, spec: str) -> asyncssh.SSHClientConnection:
        """Connect through each hop of a ProxyJump list in turn; the last one carries us."""
        conn: asyncssh.SSHClientConnection | None = None
        for hop in (h.strip() for h in spec.split(",") if h.strip()):
            opts = await asyncio.to_thread(self.endpoint.jump_options, hop)
            given = opts.known_hosts  # the endpoint's list of file names
            listed = [Path(str(p)) for p in given] if isinstance(given, list) else []
            if not any(p.is_file() for p in listed):
                raise missing_jump_known_hosts(self.cluster, hop, listed)
            if conn is not None:
                opts = asyncssh.SSHClientConnectionOptions(options=opts, tunnel=conn)
            client = self._new_client(on_lost=_ignore)
            conn = await asyncssh.connect(
                str(opts.host),
                int(opts.port),
                options=opts,
                config=None,
                client_factory=lambda client=client: client,
            )
            self._jumps.append(conn)
        assert conn is not None
        return conn

    def _on_lost(self, client: RelayClient) -> None:
        if client is self._client:
            self._conn = None
            self._client = None
            self._abort_jumps()
            log.info("ssh_connection_lost", cluster=self.cluster)

    async def _connect_once(self) -> asyncssh.SSHClientConnection:
        if not self.endpoint.has_known_hosts():
            raise unknown_key_error(self.cluster, self.endpoint)
        self._abort_jumps()  # hops left over from a failed attempt
        client = self._new_client(on_lost=self._on_lost)
        try:
            opts = await asyncio.to_thread(self.endpoint.options)
            host, port = str(opts.host), int(opts.port)
            self.endpoint.resolved(host, port)
            if isinstance(opts.tunnel, str) and opts.tunnel:  # from the profile or ssh config
                jump = await self._open_jumps(opts.tunnel)
                opts = asyncssh.SSHClientConnectionOptions(options=opts, tunnel=jump)
            conn = await asyncssh.connect(
                host, port, options=opts, config=None, client_factory=lambda: client
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise host_key_error(self.cluster, self.endpoint, str(exc)) from None
        except asyncssh.PermissionDenied as exc:
            raise client.auth_failed(str(exc)) from None
        except asyncssh.KeyImportError as exc:
            raise unusable_key(self.cluster, exc) from None
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            host, port = self.endpoint.target()
            raise HostUnreachable(
                f"cluster {self.cluster}: cannot reach {host}:{port} ({type(exc).__name__}:"
                f" {exc}); check the host/port in the profile or ~/.ssh/config and your network;"
                " the daemon retries next cycle",
                cluster=self.cluster,
            ) from exc
        self._client = client
        self.connects += 1
        log.info("ssh_connected", cluster=self.cluster, host=host, port=port, n=self.connects)
        return conn

    def drop(self) -> None:
        """Abandon a connection that failed under a command; the next `get` reconnects."""
        conn, self._conn, self._client = self._conn, None, None
        if conn is not None:
            conn.abort()
        self._abort_jumps()

    def _abort_jumps(self) -> None:
        jumps, self._jumps = self._jumps, []
        for jump in reversed(jumps):
            jump.abort()

    async def close(self) -> None:
        conn, self._conn, self._client = self._conn, None, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await conn.wait_closed()
        self._abort_jumps()
