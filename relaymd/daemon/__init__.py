"""The reconcile daemon (docs/architecture.md, ADR 0001): one asyncio process driving every cluster.

`run_daemon` for callers already in asyncio (the demo, tests); `run_daemon_blocking` for
`relaymd daemon run` (signals stop it cleanly). The heavy imports (transports, state store)
happen on first call, so importing a pure decision module stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaymd.daemon.lock import DaemonAlreadyRunning

if TYPE_CHECKING:
    import asyncio

    from relaymd.config import LoadedConfig
    from relaymd.daemon.seams import TransportFactory


async def run_daemon(
    loaded: LoadedConfig,
    *,
    interactive: bool = False,
    stop: asyncio.Event | None = None,
    max_cycles: int | None = None,
    transport_factory: TransportFactory | None = None,
) -> None:
    from relaymd.daemon import loop

    await loop.run_daemon(
        loaded,
        interactive=interactive,
        stop=stop,
        max_cycles=max_cycles,
        transport_factory=transport_factory,
    )


def run_daemon_blocking(
    loaded: LoadedConfig, *, interactive: bool = False, max_cycles: int | None = None
) -> None:
    from relaymd.daemon import loop

    loop.run_daemon_blocking(loaded, interactive=interactive, max_cycles=max_cycles)


__all__ = ["DaemonAlreadyRunning", "run_daemon", "run_daemon_blocking"]
