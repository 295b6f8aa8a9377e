"""When the daemon's cyclic garbage collector runs: between cycles, on a schedule.

The daemon's heap is mostly long-lived, acyclic rows (the row memo, the heartbeats and the
heartbeat news it keeps from one poll to the next: about a million objects at 10 000
allocations). Python's automatic collector rescans them after every few hundred allocations,
inside cycles and inside SQLite's write transaction, which cost 15-25 % of a campaign-scale
cycle (docs/benchmarks.md). Reference counting frees everything acyclic at once either way;
only garbage in reference cycles waits, here for at most `every_s`, and is collected in one
pass between cycles, outside the store lock (ADR 0027).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from relaymd.logging import get_logger

log = get_logger(__name__)

COLLECT_EVERY_S = 600.0


class CollectorSchedule:
    def __init__(
        self, every_s: float = COLLECT_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last = clock()
        self._was_enabled = gc.isenabled()
        self.collections = 0

    def start(self) -> None:
        """Automatic collection off for the daemon's life (until `stop`)."""
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._last = self._clock()

    def stop(self) -> None:
        if self._was_enabled:
            gc.enable()

    def between_cycles(self) -> None:
        """Collect everything once `every_s` has passed since the last collection."""
        now = self._clock()
        if now - self._last < self.every_s:
            return
        started = time.process_time()
        found = gc.collect()
        self._last = self._clock()
        self.collections += 1
        log.info(
            "garbage_collected",
            unreachable=found,
            cpu_ms=round((time.process_time() - started) * 1000, 1),
        )
