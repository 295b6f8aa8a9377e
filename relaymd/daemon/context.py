"""What every cluster runner of one daemon shares: the store, its lock, storage, settings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from relaymd.models import (
    ClusterProfile,
    DaemonSettings,
    StorageAccess,
    WorkerSettings,
    utcnow,
)
from relaymd.models.state import ClusterReachability, ClusterStatus

if TYPE_CHECKING:
    from pydantic import SecretStr

    from relaymd.state import AsyncStateStore
    from relaymd.storage.base import ObjectStore


class DaemonContext:
    def __init__(
        self,
        *,
        store: AsyncStateStore,
        object_store: ObjectStore,
        access: StorageAccess,
        profiles: dict[str, ClusterProfile],
        settings: DaemonSettings,
        worker: WorkerSettings,
        started_at: datetime | None = None,
    ) -> None:
        self.store = store
        # One SQLite connection serves every cluster task: decisions and their commit run
        # under this lock so two clusters never bind the same job or interleave transactions.
        self.store_lock = asyncio.Lock()
        self.object_store = object_store
        self.access = access
        self.profiles = profiles
        self.settings = settings
        self.worker = worker
        self.reachability: dict[str, ClusterReachability] = {}
        # Liveness counts no staleness from before this moment: heartbeats were not read
        # while the daemon was down.
        self.started_at = started_at or utcnow()
        # The operator's on/off switch per cluster (the store's value overrides the profile's).
        self.enabled: dict[str, bool] = {name: p.enabled for name, p in profiles.items()}
        # Each `salad` cluster's API key (ADR 0025), read from the secrets provider at start.
        self.salad_keys: dict[str, SecretStr] = {}

    def switched_on(self, profile: ClusterProfile) -> bool:
        """The operator's switch as last read from the store (the profile's before that)."""
        return self.enabled.get(profile.name, profile.enabled)

    def note_cluster_status(self, statuses: Iterable[ClusterStatus]) -> None:
        """Take the stored on/off switches, so every cluster sees another's flip at once."""
        for status in statuses:
            if status.name in self.enabled:
                self.enabled[status.name] = status.enabled

    def usable_clusters(self) -> set[str]:
        """Clusters whose pending allocations count as supply: enabled and not known to be
        unreachable."""
        bad = {
            ClusterReachability.UNREACHABLE,
            ClusterReachability.NEEDS_AUTH,
            ClusterReachability.HOST_KEY_CHANGED,
        }
        return {
            name
            for name in self.profiles
            if self.enabled.get(name, True) and self.reachability.get(name) not in bad
        }
