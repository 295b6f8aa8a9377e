"""Where and how to connect: the ssh config, the known_hosts files and the asyncssh options for
a cluster's login node and each ProxyJump hop.

~/.ssh/config is honoured; explicit profile fields override it. Host keys are checked strictly
against the profile's known_hosts, else the ssh config's UserKnownHostsFile/GlobalKnownHostsFile
with OpenSSH's defaults (~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts): never "none", so the
check is never turned off.
"""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

from relaymd.models import SSHSettings

DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
# OpenSSH's defaults for UserKnownHostsFile and GlobalKnownHostsFile (ssh_config(5)).
USER_KNOWN_HOSTS = (DEFAULT_KNOWN_HOSTS, Path("~/.ssh/known_hosts2"))
GLOBAL_KNOWN_HOSTS = (Path("/etc/ssh/ssh_known_hosts"), Path("/etc/ssh/ssh_known_hosts2"))

SSHConfigArg = str | os.PathLike[str] | bool | None


def _config_files(ssh_config: SSHConfigArg) -> list[str] | None:
    """True = ~/.ssh/config when it exists, a path = that file, None/False = none."""
    if ssh_config is True:
        path = DEFAULT_SSH_CONFIG.expanduser()
        return [str(path)] if path.is_file() else None
    if ssh_config is None or ssh_config is False:
        return None
    return [str(Path(ssh_config).expanduser())]


def _paths(value: object) -> list[Path] | None:
    """A known-hosts option as the ssh config parser gives it: a list of names, or unset."""
    if isinstance(value, list | tuple):
        return [Path(str(p)) for p in value]
    return None


class SSHEndpoint:
    """One cluster's login node as the ssh config and profile describe it."""

    def __init__(self, settings: SSHSettings, ssh_config: SSHConfigArg) -> None:
        self.settings = settings
        self.config = _config_files(ssh_config)
        self.known_hosts_files = self.known_hosts_for(settings.host)
        # The file messages name (and `ssh-keyscan >>` appends to): the first that exists.
        self.known_hosts = next(
            (p for p in self.known_hosts_files if p.is_file()), self.known_hosts_files[0]
        )
        self._target: tuple[str, int] | None = None

    def known_hosts_for(self, host: str) -> list[Path]:
        """The profile's `known_hosts`, else the files OpenSSH reads for `host`: the ssh
        config's UserKnownHostsFile, then its GlobalKnownHostsFile, each defaulting as in
        ssh_config(5) when unset. Never "none": `UserKnownHostsFile none` is read as
        ~/.ssh/known_hosts (asyncssh would skip verification), so keys are always verified."""
        if self.settings.known_hosts:
            return [Path(self.settings.known_hosts).expanduser()]
        user, site = self._configured_known_hosts(host)
        if user is None:
            user = list(USER_KNOWN_HOSTS)
        files = [p.expanduser() for p in [*(user or [DEFAULT_KNOWN_HOSTS]), *site]]
        return list(dict.fromkeys(files))

    def _configured_known_hosts(self, host: str) -> tuple[list[Path] | None, list[Path]]:
        """(UserKnownHostsFile, GlobalKnownHostsFile) from the ssh config for `host`; None for
        an unset user list, the default global list for an unset global one."""
        options = None
        if self.config:
            try:
                options = asyncssh.SSHClientConnectionOptions(config=self.config, host=host)
            except (OSError, ValueError, asyncssh.Error):
                options = None  # the connect reports a broken ssh config
        config = getattr(options, "config", None)
        user = _paths(config.get("UserKnownHostsFile")) if config is not None else None
        site = _paths(config.get("GlobalKnownHostsFile")) if config is not None else None
        return user, list(GLOBAL_KNOWN_HOSTS) if site is None else site

    def has_known_hosts(self) -> bool:
        return any(p.is_file() for p in self.known_hosts_files)

    def _common(self, host: str) -> dict[str, object]:
        """What the login node and every jump host share: host keys, ssh config, timeouts."""
        files = self.known_hosts_files if host == self.settings.host else None
        files = files or self.known_hosts_for(host)
        # Only files that exist (asyncssh fails on a missing one); with none, the missing
        # names, so the connect fails instead of falling back to trusting anything.
        existing = [str(p) for p in files if p.is_file()] or [str(p) for p in files]
        kwargs: dict[str, object] = {
            "known_hosts": existing,
            "keepalive_interval": self.settings.keepalive_s,
            "keepalive_count_max": 3,
            "connect_timeout": self.settings.connect_timeout_s,
            "config": self.config,
            "host": host,
        }
        if self.settings.identity_file is not None:
            kwargs["client_keys"] = [str(Path(self.settings.identity_file).expanduser())]
        return kwargs

    def options(self) -> asyncssh.SSHClientConnectionOptions:
        """The login node's options (reads the ssh config and key files: call off the loop)."""
        s = self.settings
        kwargs = self._common(s.host)
        if s.port is not None:
            kwargs["port"] = s.port
        if s.username is not None:
            kwargs["username"] = s.username
        if s.proxy_jump is not None:
            kwargs["tunnel"] = s.proxy_jump
        return asyncssh.SSHClientConnectionOptions(**kwargs)

    def jump_options(self, hop: str) -> asyncssh.SSHClientConnectionOptions:
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

    def target(self) -> tuple[str, int]:
        """(host, port) after ~/.ssh/config aliases, for messages and known_hosts lookups."""
        if self._target is None:
            try:
                opts = self.options()
                self._target = (str(opts.host), int(opts.port))
            except Exception:  # unreadable key or config: the connect reports it properly
                return (self.settings.host, self.settings.port or 22)
        return self._target

    def resolved(self, host: str, port: int) -> None:
        """The connect resolved the target itself: messages name what it reached."""
        self._target = (host, port)
