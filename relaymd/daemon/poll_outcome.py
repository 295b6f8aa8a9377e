"""The one place a poll's outcome is recorded: the cluster's reachability in the shared
context (provisioning elsewhere reads it), its status row (`clusters list`, `status`) and
the warning log, which says a lasting failure once rather than every poll."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from relaymd.daemon.context import DaemonContext
from relaymd.logging import get_logger
from relaymd.models import Allocation, AllocationState, ClusterProfile, utcnow
from relaymd.models.state import ClusterReachability, ClusterStatus

log = get_logger(__name__)


class SnapshotError(Exception):
    """The batched read ran but the scheduler query inside it failed."""


def poll_failures() -> tuple[type[Exception], ...]:
    """What ends a poll early as a failed poll (transports are imported only when used)."""
    from relaymd.state import ConflictError
    from relaymd.transport import TransportError

    return (TransportError, SnapshotError, ConflictError)


def failure_reachability(exc: Exception) -> ClusterReachability:
    """How a failed poll shows in `clusters list`/`status`: each state has its own advice."""
    from relaymd.state import ConflictError
    from relaymd.transport import HostKeyChanged, HostKeyRejected, NeedsAuth

    if isinstance(exc, HostKeyChanged):
        return ClusterReachability.HOST_KEY_CHANGED
    if isinstance(exc, NeedsAuth | HostKeyRejected):
        return ClusterReachability.NEEDS_AUTH
    if isinstance(exc, ConflictError):  # the cluster answered; our commit was refused
        return ClusterReachability.REACHABLE
    return ClusterReachability.UNREACHABLE


class RepeatedWarning:
    """Log a failure when it changes, then only every `every_s` while it stays the same: a
    cluster down for hours must not write the same warning every poll."""

    def __init__(self, every_s: float = 600.0) -> None:
        self.every_s = every_s
        self._last: tuple[str, float] | None = None

    def due(self, message: str, now: float) -> bool:
        last = self._last
        if last is not None and last[0] == message and now - last[1] < self.every_s:
            return False
        self._last = (message, now)
        return True

    def reset(self) -> None:
        self._last = None


class PollOutcome:
    def __init__(self, ctx: DaemonContext, profile: ClusterProfile) -> None:
        self._ctx = ctx
        self._profile = profile
        self._failure_log = RepeatedWarning()

    async def succeeded(
        self,
        started: datetime,
        live: list[Allocation],
        *,
        interval_s: float,
        config_error: str | None,
    ) -> None:
        ctx, name = self._ctx, self._profile.name
        ctx.reachability[name] = ClusterReachability.REACHABLE
        self._failure_log.reset()
        async with ctx.store_lock:
            current = await ctx.store.get_cluster_status(name)
            # The operator may have flipped the switch during the cycle: keep their value.
            enabled = current.enabled if current is not None else ctx.switched_on(self._profile)
            await ctx.store.upsert_cluster_status(
                ClusterStatus(
                    name=name,
                    enabled=enabled,
                    reachability=ClusterReachability.REACHABLE
                    if enabled
                    else ClusterReachability.DISABLED,
                    last_poll_at=started,
                    last_ok_at=utcnow(),
                    last_error=config_error,
                    poll_interval_s=interval_s,
                    pending=sum(
                        a.state in (AllocationState.PENDING, AllocationState.SUBMITTING)
                        for a in live
                    ),
                    running=sum(a.state is AllocationState.RUNNING for a in live),
                    backoff=current.backoff if current is not None else {},
                )
            )

    async def failed(self, exc: Exception, started: datetime, *, interval_s: float) -> None:
        ctx, name = self._ctx, self._profile.name
        reachability = failure_reachability(exc)
        ctx.reachability[name] = reachability
        if self._failure_log.due(f"{reachability} {type(exc).__name__}", time.monotonic()):
            log.warning(
                "cluster_poll_failed",
                cluster=name,
                reachability=str(reachability),
                error=str(exc),
            )
        update: dict[str, Any] = {
            "name": name,
            "enabled": ctx.switched_on(self._profile),
            "reachability": reachability,
            "last_poll_at": started,
            "last_error": str(exc)[:500],
            "poll_interval_s": interval_s,
        }
        async with ctx.store_lock:
            current = await ctx.store.get_cluster_status(name)
            if current is not None:
                update["enabled"] = current.enabled
                new = current.model_copy(update=update)
            else:
                new = ClusterStatus.model_validate(update)
            await ctx.store.upsert_cluster_status(new)
