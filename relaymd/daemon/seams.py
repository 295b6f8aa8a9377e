"""The transport as the cluster cycle uses it, as a Protocol: every `Transport` fits it, and
so does a stand-in with the same methods (a benchmark's synthetic login node)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from relaymd.models import ClusterProfile
    from relaymd.transport.base import CommandResult


RunScript = Callable[[str], Awaitable["CommandResult"]]


class ClusterTransport(Protocol):
    round_trips: int

    async def run(self, script: str, *, timeout: float | None = None) -> CommandResult: ...  # noqa: ASYNC109

    async def close(self) -> None: ...


class TransportFactory(Protocol):
    def __call__(
        self, profile: ClusterProfile, *, interactive: bool = False
    ) -> ClusterTransport: ...
