"""Commands on a login node over ONE long-lived asyncssh connection (ADR 0004).

Lazy connect, reused by every call, reconnected (with backoff) when it drops. ~/.ssh/config and
ssh-agent are honoured; explicit profile fields override them. Host keys are checked strictly
against the profile's known_hosts, else the ssh config's UserKnownHostsFile/GlobalKnownHostsFile,
else ~/.ssh/known_hosts: nothing is trusted on first use, and the check is never turned off.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
from pathlib import Path
from typing import Any

import asyncssh
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from relaymd.logging import get_logger
from relaymd.models import ClusterProfile, SSHSettings
from relaymd.transport.base import (
    CommandResult,
    HostKeyChanged,
    HostKeyRejected,
    HostUnreachable,
    NeedsAuth,
    RemoteTimeout,
    Transport,
    TransportError,
    whole_or_nothing,
)
from relaymd.transport.ssh_auth import Prompter, RelayClient, terminal_prompter

log = get_logger(__name__)

DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
# The remote `timeout` outlives ours by this much, so a command we abandon dies there too.
REMOTE_KILL_GRACE_S = 5
CONNECT_ATTEMPTS = 3


def _ignore(_: RelayClient) -> None:
    """A jump host's loss shows up as the login node's connection loss."""


def _default_config() -> list[str] | None:
    path = DEFAULT_SSH_CONFIG.expanduser()
    return [str(path)] if path.is_file() else None


class SSHTransport(Transport):
    def __init__(
        self,
        profile: ClusterProfile,
        *,
        interactive: bool = False,
        ssh_config: str | os.PathLike[str] | bool | None = True,
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
        self.settings: SSHSettings = profile.ssh
        self.default_timeout = profile.command_timeout_s
        self.interactive = interactive
        self.prompter = prompter
        self.connect_attempts = connect_attempts
        if ssh_config is True:
            self._config = _default_config()
        elif ssh_config is None or ssh_config is False:
            self._config = None
        else:
            self._config = [str(Path(ssh_config).expanduser())]
        self.known_hosts_files = self._known_hosts_files(self.settings.host)
        # The file messages name (and `ssh-keyscan >>` appends to): the first that exists.
        self.known_hosts = next(
            (p for p in self.known_hosts_files if p.is_file()), self.known_hosts_files[0]
        )
        self.connects = 0  # successful connects: tests prove the connection is reused
        self._conn: asyncssh.SSHClientConnection | None = None
        self._client: RelayClient | None = None
        self._connect_lock = asyncio.Lock()
        self._channels = asyncio.Semaphore(profile.max_channels)
        self._target: tuple[str, int] | None = None
        self._jumps: list[asyncssh.SSHClientConnection] = []  # ProxyJump hops, outermost first

    # -- connection ----------------------------------------------------------------------
    def _known_hosts_files(self, host: str) -> list[Path]:
        """The profile's `known_hosts`, else the ssh config's UserKnownHostsFile and
        GlobalKnownHostsFile for `host`, else ~/.ssh/known_hosts. Never "none": host keys are
        always verified (asyncssh would skip verification for `UserKnownHostsFile none`)."""
        if self.settings.known_hosts:
            return [Path(self.settings.known_hosts).expanduser()]
        if self._config:
            try:
                opts = asyncssh.SSHClientConnectionOptions(config=self._config, host=host)
            except (OSError, ValueError, asyncssh.Error):
                opts = None  # the connect reports a broken ssh config
            listed = getattr(opts, "known_hosts", None)
            if isinstance(listed, list | tuple) and listed:
                return [Path(str(p)).expanduser() for p in listed]
        return [DEFAULT_KNOWN_HOSTS.expanduser()]

    def _common(self, host: str) -> dict[str, Any]:
        """What the login node and every jump host share: host keys, ssh config, timeouts."""
        files = self.known_hosts_files if host == self.settings.host else None
        files = files or self._known_hosts_files(host)
        # Only files that exist (asyncssh fails on a missing one); with none, the missing
        # names, so the connect fails instead of falling back to trusting anything.
        existing = [str(p) for p in files if p.is_file()] or [str(p) for p in files]
        kwargs: dict[str, Any] = {
            "known_hosts": existing,
            "keepalive_interval": self.settings.keepalive_s,
            "keepalive_count_max": 3,
            "connect_timeout": self.settings.connect_timeout_s,
            "config": self._config,
            "host": host,
        }
        if self.settings.identity_file is not None:
            kwargs["client_keys"] = [str(Path(self.settings.identity_file).expanduser())]
        return kwargs

    def _options(self) -> asyncssh.SSHClientConnectionOptions:
        s = self.settings
        kwargs = self._common(s.host)
        if s.port is not None:
            kwargs["port"] = s.port
        if s.username is not None:
            kwargs["username"] = s.username
        if s.proxy_jump is not None:
            kwargs["tunnel"] = s.proxy_jump
        return asyncssh.SSHClientConnectionOptions(**kwargs)

    def _jump_options(self, hop: str) -> asyncssh.SSHClientConnectionOptions:
        """One ProxyJump hop (`[user@]host[:port]`, often an alias): resolved through the same
        ssh config and checked against the same known_hosts as the login node. (asyncssh's own
        tunnel string would use neither.)"""
        user, _, host = hop.rpartition("@")
        host, _, port = host.partition(":")
        kwargs = self._common(host)
        if user:
            kwargs["username"] = user
        if port:
            kwargs["port"] = int(port)
        return asyncssh.SSHClientConnectionOptions(**kwargs)

    async def _open_jumps(self, spec: str) -> asyncssh.SSHClientConnection:
        """Connect through each hop of a ProxyJump list in turn; the last one carries us."""
        conn: asyncssh.SSHClientConnection | None = None
        for hop in (h.strip() for h in spec.split(",") if h.strip()):
            opts = await asyncio.to_thread(self._jump_options, hop)
            given = opts.known_hosts  # _common's list of file names
            listed = [Path(str(p)) for p in given] if isinstance(given, list) else []
            if not any(p.is_file() for p in listed):
                raise HostKeyRejected(
                    f"cluster {self.cluster}: no known_hosts file for the jump host {hop} "
                    f"({', '.join(map(str, listed))}); add its key with ssh-keyscan after "
                    "checking the fingerprint",
                    cluster=self.cluster,
                )
            if conn is not None:
                opts = asyncssh.SSHClientConnectionOptions(options=opts, tunnel=conn)
            client = RelayClient(
                self.cluster, interactive=self.interactive, prompter=self.prompter, on_lost=_ignore
            )
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

    def target(self) -> tuple[str, int]:
        """(host, port) after ~/.ssh/config aliases, for messages and known_hosts lookups."""
        if self._target is None:
            try:
                opts = self._options()
                self._target = (str(opts.host), int(opts.port))
            except Exception:  # unreadable key or config: the connect reports it properly
                return (self.settings.host, self.settings.port or 22)
        return self._target

    def _on_lost(self, client: RelayClient) -> None:
        if client is self._client:
            self._conn = None
            self._client = None
            self._abort_jumps()
            log.info("ssh_connection_lost", cluster=self.cluster)

    async def _connection(self) -> asyncssh.SSHClientConnection:
        async with self._connect_lock:
            if self._conn is not None:
                return self._conn
            retrying = AsyncRetrying(
                # A connect that timed out already waited long: retry only quick failures.
                stop=stop_after_attempt(self.connect_attempts)
                | stop_after_delay(self.settings.connect_timeout_s),
                wait=wait_exponential(multiplier=0.5, max=4),
                retry=retry_if_exception_type(HostUnreachable),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    self._conn = await self._connect_once()
            assert self._conn is not None
            return self._conn

    async def _connect_once(self) -> asyncssh.SSHClientConnection:
        if not any(p.is_file() for p in self.known_hosts_files):
            raise HostKeyRejected(self._unknown_key_message(), cluster=self.cluster)
        self._abort_jumps()  # hops left over from a failed attempt
        client = RelayClient(
            self.cluster,
            interactive=self.interactive,
            prompter=self.prompter,
            on_lost=self._on_lost,
        )
        try:
            opts = await asyncio.to_thread(self._options)
            host, port = str(opts.host), int(opts.port)
            self._target = (host, port)
            if isinstance(opts.tunnel, str) and opts.tunnel:  # from the profile or ssh config
                jump = await self._open_jumps(opts.tunnel)
                opts = asyncssh.SSHClientConnectionOptions(options=opts, tunnel=jump)
            conn = await asyncssh.connect(
                host, port, options=opts, config=None, client_factory=lambda: client
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            message = self._host_key_message(str(exc))
            if self._has_recorded_key(*self.target()):
                raise HostKeyChanged(message, cluster=self.cluster) from None
            raise HostKeyRejected(message, cluster=self.cluster) from None
        except asyncssh.PermissionDenied as exc:
            raise NeedsAuth(self._auth_message(client, str(exc)), cluster=self.cluster) from None
        except asyncssh.KeyImportError as exc:
            raise NeedsAuth(
                f"cluster {self.cluster}: cannot use the SSH key ({exc}); if it is encrypted,"
                " load it with `ssh-add <key>` and remove `ssh.identity_file` from the cluster"
                " profile (an explicit key file is read directly, never through ssh-agent;"
                " without it the daemon uses $SSH_AUTH_SOCK), or point `ssh.identity_file` at"
                " an unencrypted key",
                cluster=self.cluster,
            ) from None
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            host, port = self.target()
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

    # -- messages ------------------------------------------------------------------------
    def _keyscan(self) -> str:
        host, port = self.target()
        port_opt = f"-p {port} " if port != 22 else ""
        return f"ssh-keyscan {port_opt}{host} >> {self.known_hosts}"

    def _unknown_key_message(self) -> str:
        host, port = self.target()
        return (
            f"cluster {self.cluster}: the host key of {host}:{port} is not in {self.known_hosts};"
            f" add it with `{self._keyscan()}` after checking the fingerprint with your"
            " admins (RelayMD never trusts a host key on first use)"
        )

    def _host_key_message(self, detail: str) -> str:
        host, port = self.target()
        if self._has_recorded_key(host, port):
            host_arg = f"[{host}]:{port}" if port != 22 else host
            return (
                f"cluster {self.cluster}: the host key of {host}:{port} does NOT match the one"
                f" recorded in {self.known_hosts} ({detail}). This may be a man-in-the-middle"
                " attack; do not connect until your admins confirm the key changed, then run"
                f" `ssh-keygen -f {self.known_hosts} -R '{host_arg}'` and `{self._keyscan()}`"
            )
        return self._unknown_key_message()

    def _has_recorded_key(self, host: str, port: int) -> bool:
        try:
            known = asyncssh.read_known_hosts(
                [str(p) for p in self.known_hosts_files if p.is_file()]
            )
            keys = known.match(host, host, port if port != 22 else None)[0]
        except (OSError, ValueError):
            return False
        return bool(keys)

    def _auth_message(self, client: RelayClient, detail: str) -> str:
        if client.wanted_person and not self.interactive:
            return (
                f"cluster {self.cluster}: the login node asks for a password or 2FA code"
                f" ({detail}); run `relaymd daemon run` in a terminal to answer it, or use a"
                " key the cluster accepts without a prompt. Jobs are kept; the cluster is"
                " marked needs-auth"
            )
        return (
            f"cluster {self.cluster}: SSH authentication failed ({detail}); check"
            " `ssh.username`/`ssh.identity_file` in the profile or ~/.ssh/config, and that"
            " your key is loaded in ssh-agent (`ssh-add -l`)"
        )

    # -- commands ------------------------------------------------------------------------
    async def check(self) -> None:
        await self._connection()

    async def run(self, script: str, *, timeout: float | None = None) -> CommandResult:  # noqa: ASYNC109
        limit = self.default_timeout if timeout is None else timeout
        self.round_trips += 1
        # The remote `timeout` kills a command we gave up on, so it cannot pile up there.
        command = (
            f"timeout -k {REMOTE_KILL_GRACE_S} {math.ceil(limit) + REMOTE_KILL_GRACE_S} bash -s"
        )
        async with self._channels:
            await self._connection()  # connect failures keep their own type and timeout
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
            self._drop()
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
            conn = await self._connection()
            try:
                return await conn.create_process(
                    command, input=whole_or_nothing(script), errors="replace"
                )
            except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, OSError) as exc:
                self._drop()
                if attempt == 1:
                    raise HostUnreachable(
                        f"cluster {self.cluster}: cannot open an SSH channel ({exc}); the"
                        " daemon retries next cycle",
                        cluster=self.cluster,
                    ) from exc
                log.info("ssh_reconnecting", cluster=self.cluster, error=str(exc))
        raise AssertionError("unreachable")

    def _drop(self) -> None:
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


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
