"""What every step of one cluster's cycle works with."""

from __future__ import annotations

from dataclasses import dataclass

from relaymd.daemon.carried import CarriedState
from relaymd.daemon.context import DaemonContext
from relaymd.daemon.seams import RunScript
from relaymd.daemon.storage_cluster import StorageClusterCarrier
from relaymd.mailbox.scratch import ScratchCarrier
from relaymd.models import ClusterProfile
from relaymd.scheduler.port import SchedulerPort


@dataclass(frozen=True)
class CycleScope:
    ctx: DaemonContext  # shared by every cluster: the store, its lock, storage, settings
    profile: ClusterProfile
    scheduler: SchedulerPort
    carried: CarriedState
    run: RunScript  # one round trip to the login node
    carrier: ScratchCarrier | StorageClusterCarrier  # the mailboxes: over `run`, or the bucket
