"""What one cluster's cycles hand on to the next; everything else lives in the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from relaymd.daemon.decide.decisions import CycleDecisions
from relaymd.daemon.heartbeat_news import HeldNews
from relaymd.mailbox.carrier import ClusterSnapshot
from relaymd.mailbox.reading import HeartbeatMemo


@dataclass
class CarriedState:
    # Ended allocations whose worker.log tail is still to read (allocation -> job).
    want_log: dict[str, str] = field(default_factory=dict)
    # The last parsed heartbeats: the login node leaves unchanged ones out of the read.
    heartbeats: HeartbeatMemo = field(default_factory=HeartbeatMemo)
    # Allocations missing from both squeue and sacct, since when (sacct can lag squeue).
    vanished_since: dict[str, datetime] = field(default_factory=dict)
    # Credentials still to remove from ended allocations' folders (until a write confirms).
    credentials_owed: set[str] = field(default_factory=set)
    # The first read after a start sweeps the credentials a crash left behind.
    swept: bool = False
    # Heartbeat news decided but not yet written to the state file (ADR 0027).
    news: HeldNews = field(default_factory=HeldNews)

    def after_commit(self, snapshot: ClusterSnapshot, decisions: CycleDecisions) -> None:
        """Take what a committed cycle leaves for the next one."""
        for alloc_id, files in snapshot.files.items():
            if alloc_id in self.want_log and files.log_tail is not None:
                self.want_log.pop(alloc_id)
        self.want_log.update(decisions.want_log)
        self.vanished_since = decisions.vanished_since
