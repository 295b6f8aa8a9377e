"""What to tell a person whose login node's host key is unknown or changed: RelayMD never
trusts a host key on first use, so the message carries the commands that record it."""

from __future__ import annotations

from pathlib import Path

import asyncssh

from relaymd.transport.base import HostKeyChanged, HostKeyRejected
from relaymd.transport.ssh_options import SSHEndpoint


def has_recorded_key(files: list[Path], host: str, port: int) -> bool:
    try:
        known = asyncssh.read_known_hosts([str(p) for p in files if p.is_file()])
        keys = known.match(host, host, port if port != 22 else None)[0]
    except (OSError, ValueError):
        return False
    return bool(keys)


def _keyscan(endpoint: SSHEndpoint) -> str:
    host, port = endpoint.target()
    port_opt = f"-p {port} " if port != 22 else ""
    return f"ssh-keyscan {port_opt}{host} >> {endpoint.known_hosts}"


def unknown_key_error(cluster: str, endpoint: SSHEndpoint) -> HostKeyRejected:
    host, port = endpoint.target()
    return HostKeyRejected(
        f"cluster {cluster}: the host key of {host}:{port} is not in {endpoint.known_hosts};"
        f" add it with `{_keyscan(endpoint)}` after checking the fingerprint with your"
        " admins (RelayMD never trusts a host key on first use)",
        cluster=cluster,
    )


def host_key_error(cluster: str, endpoint: SSHEndpoint, detail: str) -> HostKeyRejected:
    """asyncssh could not verify the host key: changed (a key is recorded) or unknown."""
    host, port = endpoint.target()
    if not has_recorded_key(endpoint.known_hosts_files, host, port):
        return unknown_key_error(cluster, endpoint)
    host_arg = f"[{host}]:{port}" if port != 22 else host
    return HostKeyChanged(
        f"cluster {cluster}: the host key of {host}:{port} does NOT match the one"
        f" recorded in {endpoint.known_hosts} ({detail}). This may be a man-in-the-middle"
        " attack; do not connect until your admins confirm the key changed, then run"
        f" `ssh-keygen -f {endpoint.known_hosts} -R '{host_arg}'` and `{_keyscan(endpoint)}`",
        cluster=cluster,
    )


def missing_jump_known_hosts(cluster: str, hop: str, listed: list[Path]) -> HostKeyRejected:
    return HostKeyRejected(
        f"cluster {cluster}: no known_hosts file for the jump host {hop} "
        f"({', '.join(map(str, listed))}); add its key with ssh-keyscan after "
        "checking the fingerprint",
        cluster=cluster,
    )
