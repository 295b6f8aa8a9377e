"""Adaptive poll interval: fast while things change, backing off while nothing does."""

from __future__ import annotations

from relaymd.models import PollSettings

BACKOFF = 1.5


def next_interval(
    current: float,
    poll: PollSettings,
    *,
    changed: bool,
    busy: bool,
    idle_cap: float | None = None,
    busy_cap: float | None = None,
    failed: bool = False,
) -> float:
    """`changed`: this cycle saw a state change; `busy`: allocations are live there.

    A change snaps back to the minimum; a quiet cycle grows the interval by 1.5x up to the
    maximum. While workers are live the interval never exceeds `busy_cap` (the heartbeat
    interval: polling slower would blur liveness); with nothing live it may stretch to
    `idle_cap`. A failed poll waits at least twice the minimum before the next try.
    """
    if changed and not failed:
        return poll.min_interval_s
    ceiling = poll.max_interval_s
    if busy and busy_cap is not None:
        ceiling = min(ceiling, max(busy_cap, poll.min_interval_s))
    elif not busy and idle_cap is not None:
        ceiling = max(idle_cap, poll.min_interval_s)
    value = min(max(current, poll.min_interval_s) * BACKOFF, ceiling)
    if failed:
        value = min(max(value, poll.min_interval_s * 2), max(ceiling, poll.min_interval_s * 2))
    return value
