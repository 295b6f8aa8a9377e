"""When a segment ran, as the views show it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports this module at start-up: no pydantic then
    from datetime import datetime

    from relaymd.models import Segment


def segment_times(segment: Segment) -> tuple[datetime, datetime | None, str]:
    """(start, end, source) of a segment for the history: the worker's first MD step and
    terminal event (already clamped onto the daemon's clock) where it reported them, else when
    the daemon assigned the segment and saw it end."""
    start = segment.worker_started_at or segment.started_at
    end = segment.worker_ended_at or segment.ended_at
    if segment.worker_started_at and (segment.worker_ended_at or segment.ended_at is None):
        source = "worker"
    elif segment.worker_started_at:
        source = "worker start, daemon end"
    else:
        source = "daemon"
    return start, end, source
