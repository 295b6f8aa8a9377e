"""Transports: how scripts reach a cluster (`ssh` to a login node, or `local`)."""

from __future__ import annotations

from relaymd.models import ClusterProfile
from relaymd.transport.base import (
    CommandResult,
    HostKeyChanged,
    HostKeyRejected,
    HostUnreachable,
    NeedsAuth,
    RemoteTimeout,
    Transport,
    TransportError,
)
from relaymd.transport.local import LocalTransport


def make_transport(profile: ClusterProfile, *, interactive: bool = False) -> Transport:
    if profile.transport == "local":
        return LocalTransport(profile)
    # asyncssh is imported only when a cluster actually uses SSH.
    from relaymd.transport.ssh import SSHTransport

    return SSHTransport(profile, interactive=interactive)


__all__ = [
    "CommandResult",
    "HostKeyChanged",
    "HostKeyRejected",
    "HostUnreachable",
    "LocalTransport",
    "NeedsAuth",
    "RemoteTimeout",
    "Transport",
    "TransportError",
    "make_transport",
]
