"""How commands reach a cluster: one whole bash script per round trip (ADR 0004).

Transports only move scripts and bytes; what the scripts say (sbatch, squeue, mailbox files)
belongs to the scheduler and the daemon. Modelled on AiiDA's split of transport from scheduler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from pydantic import BaseModel


class CommandResult(BaseModel):
    exit_status: int
    stdout: str
    stderr: str


class TransportError(Exception):
    """Any failure to run a command on a cluster; the message says what to do."""

    def __init__(self, message: str, *, cluster: str = "") -> None:
        super().__init__(message)
        self.cluster = cluster


class HostUnreachable(TransportError):
    """The login node did not answer or the connection dropped; retried next cycle."""


class HostKeyRejected(TransportError):
    """The host key is unknown or changed: never trusted automatically."""


class HostKeyChanged(HostKeyRejected):
    """The host key differs from the one recorded in known_hosts (ssh-keygen -R once checked)."""


class NeedsAuth(TransportError):
    """Authentication needs a person (2FA prompt, key not accepted, encrypted key)."""


class RemoteTimeout(TransportError):
    """A command ran past its timeout; it was abandoned (and killed where possible)."""


def whole_or_nothing(script: str) -> str:
    """`script` as the body of a function that is called only after bash has read all of it.

    `bash -s` runs lines as they arrive; a connection lost mid-transfer would otherwise run a
    truncated script (half the mailbox writes of a cycle). A cut-off function definition is a
    syntax error, and a definition without its call does nothing: the script runs whole or
    not at all.
    """
    return f"__relaymd_script() {{\n{script}\n}}\n__relaymd_script\n"


class Transport(ABC):
    """Runs bash scripts on one cluster's login node (or this machine)."""

    cluster: str
    # One per `run` call, so tests can count round trips per daemon poll (invariant 6).
    round_trips: int = 0

    @abstractmethod
    async def run(self, script: str, *, timeout: float | None = None) -> CommandResult:  # noqa: ASYNC109
        """Run `script` with `bash -s` (fed on stdin: no argv limit, no quoting of the script).

        `timeout` defaults to the profile's `command_timeout_s`; past it, RemoteTimeout.
        """

    @abstractmethod
    async def check(self) -> None:
        """Connect if needed; raise the TransportError that explains why not."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; a later `run` reconnects."""

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
