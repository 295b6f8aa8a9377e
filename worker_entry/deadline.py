"""The allocation's end as the worker knows it, and what SLURM's early warning adds to it.

The job script exports SLURM's own end time (start + time limit) as $RELAYMD_DEADLINE and asks
for `--signal=B:USR1@<lead>`. SLURM sends that signal on its own event tick, up to 60 s before
`end - lead`, so the warning says only "the end is between now + lead and now + lead + 60 s".
It never ends a segment by itself: it fills in a missing deadline (the earliest possible end)
or corrects a known one that lies beyond the latest possible end. TERM stays "stop now".
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

# SLURM delivers --signal up to this long before the requested lead (its event resolution).
SLURM_SIGNAL_EARLY_S = 60.0


def deadline_after_warning(known: datetime | None, warned_at: datetime, lead_s: float) -> datetime:
    """The deadline once the walltime warning arrived at `warned_at`, `lead_s` ahead of it."""
    earliest = warned_at + timedelta(seconds=lead_s)
    latest = earliest + timedelta(seconds=SLURM_SIGNAL_EARLY_S)
    if known is None or known > latest:
        return earliest
    return known


class Deadline:
    """The known deadline plus a pending warning; `warn` is safe to call from a signal handler
    (it only stores a number), the rest folds the warning in on first use."""

    def __init__(self, known: datetime | None, warning_lead_s: float | None) -> None:
        self._known = known
        self.warning_lead_s = warning_lead_s
        self._warned_at: float | None = None
        self._applied = False
        self._lock = threading.Lock()

    def warn(self) -> None:
        if self._warned_at is None:
            self._warned_at = time.time()

    @property
    def warned(self) -> bool:
        return self._warned_at is not None

    def apply_warning(self) -> bool:
        """Fold a pending warning into the deadline; True the first time (once per warning)."""
        warned_at = self._warned_at
        if warned_at is None or self.warning_lead_s is None:
            return False
        with self._lock:
            if self._applied:
                return False
            self._applied = True
            self._known = deadline_after_warning(
                self._known, datetime.fromtimestamp(warned_at, UTC), self.warning_lead_s
            )
            return True

    @property
    def known(self) -> datetime | None:
        """The deadline without folding in a pending warning (safe in a signal handler)."""
        return self._known

    @property
    def value(self) -> datetime | None:
        self.apply_warning()
        return self._known
