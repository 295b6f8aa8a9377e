"""The queue-aware ETA (pure): simulating time left plus a queue wait per handoff still to
come, with the basis it was computed on so that a user can judge it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from pydantic import BaseModel, Field

RECENT_WAITS = 10  # the median of this many most recent queue waits stands for the next one


class Eta(BaseModel):
    """When a job should finish, seconds from now, and what that rests on."""

    total_s: float = Field(ge=0)
    simulating_s: float = Field(ge=0)
    handoffs: int = Field(ge=0)
    queue_wait_s: float = Field(ge=0)  # expected wait for each allocation still to come
    waits_measured: int = Field(ge=0)  # how many measured waits the median came from

    @property
    def basis(self) -> str:
        """E.g. "~2 d 4 h: 41 h simulating + 11 handoffs x ~15 min queue"."""
        text = f"~{human_span(self.total_s)}: {human_span(self.simulating_s)} simulating"
        if self.handoffs:
            plural = "handoff" if self.handoffs == 1 else "handoffs"
            queue = f"~{human_span(self.queue_wait_s)}" if self.waits_measured else "no measured"
            text += f" + {self.handoffs} {plural} x {queue} queue"
        return text


def expected_queue_wait(waits_s: Sequence[float]) -> float:
    """The median of the most recent waits (oldest first in `waits_s`); 0 without any."""
    recent = _recent(waits_s)
    return float(statistics.median(recent)) if recent else 0.0


def _recent(waits_s: Sequence[float]) -> list[float]:
    return [w for w in waits_s[-RECENT_WAITS:] if w >= 0]


def estimate_eta(
    remaining_steps: int,
    steps_per_s: float | None,
    segment_s: float,
    segment_left_s: float | None,
    waits_s: Sequence[float],
) -> Eta | None:
    """ETA of a job with `remaining_steps` to go at the measured `steps_per_s`.

    `segment_s` is how long one allocation simulates (measured segments, else the walltime);
    `segment_left_s` how long the running segment has until its handoff (None when the job
    waits for an allocation, which then costs one more queue wait); `waits_s` the measured
    queue waits of its cluster/partition, oldest first. None without a rate to go on.
    """
    if steps_per_s is None or steps_per_s <= 0 or segment_s <= 0:
        return None
    simulating = max(0, remaining_steps) / steps_per_s
    if segment_left_s is None:
        handoffs = max(1, math.ceil(simulating / segment_s)) if simulating > 0 else 0
    else:
        beyond = simulating - max(0.0, segment_left_s)
        handoffs = math.ceil(beyond / segment_s) if beyond > 0 else 0
    wait = expected_queue_wait(waits_s)
    return Eta(
        total_s=simulating + handoffs * wait,
        simulating_s=simulating,
        handoffs=handoffs,
        queue_wait_s=wait,
        waits_measured=len(_recent(waits_s)),
    )


def human_span(seconds: float) -> str:
    """A duration in its two largest units: "2 d 4 h", "41 h", "15 min", "40 s"."""
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours >= 10 or (hours and not minutes):
        return f"{hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"
