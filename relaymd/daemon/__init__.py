"""The reconcile daemon (docs/architecture.md, ADR 0001): one asyncio process driving every cluster.

`run_daemon` for callers already in asyncio (the demo, tests); `run_daemon_blocking` for
`relaymd daemon run` (signals stop it cleanly). Both live in `relaymd.daemon.loop` and are
looked up on first use (PEP 562), so importing a pure decision module stays cheap: the heavy
imports (transports, state store) come with the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaymd.daemon.lock import DaemonAlreadyRunning

if TYPE_CHECKING:
    from relaymd.daemon.loop import run_daemon, run_daemon_blocking

_FROM_LOOP = ("run_daemon", "run_daemon_blocking")


def __getattr__(name: str) -> Any:
    if name in _FROM_LOOP:
        from relaymd.daemon import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DaemonAlreadyRunning", "run_daemon", "run_daemon_blocking"]
