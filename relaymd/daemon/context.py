"""What every cluster runner of one daemon shares: the store, its lock, storage, settings."""

from __future__ import annotations

import asyncio
from typing import Any

from relaymd.models import ClusterProfile, DaemonSettings, StorageAccess, WorkerSettings
from relaymd.models.state import ClusterReachability


class DaemonContext:
    def __init__(
        self,
        *,
        store: Any,
        object_store: Any,
        access: StorageAccess,
        profiles: dict[str, ClusterProfile],
        settings: DaemonSettings,
        worker: WorkerSettings,
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

    def usable_clusters(self) -> set[str]:
        """Clusters whose pending allocations count as supply (not known to be unreachable)."""
        bad = {ClusterReachability.UNREACHABLE, ClusterReachability.NEEDS_AUTH}
        return {name for name in self.profiles if self.reachability.get(name) not in bad}
