"""The handoff margin: how long before the deadline the final checkpoint must start.

It adapts to the measured time of a checkpoint save + upload (2x the last one plus a floor),
bounded by --margin-min/--margin-max, so a fast system does not waste allocation time.
"""

from __future__ import annotations

import threading

from relaymd.models.config import INITIAL_HANDOFF_MARGIN_S

SAFETY_FACTOR = 2.0
FLOOR_S = 5.0


class HandoffMargin:
    def __init__(self, min_s: float, max_s: float) -> None:
        self._min = min_s
        self._max = max_s
        self._lock = threading.Lock()
        self._measured: float | None = None

    def _clamp(self, value: float) -> float:
        return min(self._max, max(self._min, value))

    def observe(self, checkpoint_and_upload_s: float) -> None:
        with self._lock:
            self._measured = checkpoint_and_upload_s

    @property
    def measured_s(self) -> float | None:
        with self._lock:
            return self._measured

    @property
    def seconds(self) -> float:
        with self._lock:
            measured = self._measured
        if measured is None:
            return self._clamp(INITIAL_HANDOFF_MARGIN_S)
        return self._clamp(SAFETY_FACTOR * measured + FLOOR_S)
