"""Liveness on the daemon's clock (invariant 5).

A worker's heartbeat carries a `seq` it increments every H seconds. The daemon remembers
the last seq it saw and *its own* time when that seq last changed; the worker's clock
(`written_at`) is never compared with ours, so clock skew cannot make a worker look dead.
"""

from __future__ import annotations

from datetime import datetime

from relaymd.mailbox.models import HEARTBEAT_MAX_BYTES, Heartbeat
from relaymd.models import Allocation, Job
from relaymd.models.base import copy_with
from relaymd.models.job import JobEpoch


def heartbeat_counts(
    alloc_id: str,
    job: Job | None,
    heartbeat: Heartbeat | None,
    reserved: JobEpoch | None = None,
) -> bool:
    """Whether `heartbeat` is news about this allocation's current assignment: it names the
    allocation and the bound (job, epoch), or no job at all when none is bound, or, for a
    reserved successor (ADR 0009), the (job, epoch) pre-written to it while it waits for the
    handoff. Anything else (another job, an old or future epoch, another allocation's file)
    keeps nothing alive.
    """
    if heartbeat is None or heartbeat.allocation_id != alloc_id:
        return False
    if job is None:
        if heartbeat.job_id is None:
            return True
        return reserved is not None and (heartbeat.job_id, heartbeat.epoch) == reserved
    return heartbeat.job_id == job.id and heartbeat.epoch == job.epoch


def unheard_note(heartbeat: Heartbeat | None, oversized: bool) -> str:
    """Why the heartbeat on scratch did not count, for the `worker_hung` audit."""
    if oversized:
        return f" (heartbeat.json over {HEARTBEAT_MAX_BYTES} bytes, ignored)"
    if heartbeat is None:
        return ""
    return (
        f" (heartbeat names allocation {heartbeat.allocation_id}, job {heartbeat.job_id},"
        f" epoch {heartbeat.epoch}, seq {heartbeat.seq})"
    )


def observe_heartbeat(alloc: Allocation, heartbeat: Heartbeat | None, now: datetime) -> Allocation:
    """The allocation with `last_seq`/`seq_changed_at` updated from a freshly read heartbeat.

    A missing or unreadable heartbeat is "no news": nothing changes.
    """
    if heartbeat is None or heartbeat.seq == alloc.last_seq:
        return alloc
    update: dict[str, object] = {"last_seq": heartbeat.seq, "seq_changed_at": now}
    if heartbeat.gpus:
        update["gpus"] = heartbeat.gpus
    return copy_with(alloc, update)


def liveness_reference(alloc: Allocation, *, not_before: datetime | None = None) -> datetime | None:
    """Daemon time since which the worker owes us a moving seq.

    `not_before` (the daemon's start) caps how old that can be: while the daemon was down
    nobody read heartbeats, so an hours-old `seq_changed_at` says nothing about the worker.
    """
    since = alloc.seq_changed_at or alloc.started_at
    if since is None or not_before is None:
        return since
    return max(since, not_before)


def is_stale(
    alloc: Allocation, now: datetime, stale_after_s: float, *, not_before: datetime | None = None
) -> bool:
    """True when the seq has not moved for `stale_after_s` seconds of daemon time.

    Only meaningful for an allocation the scheduler reports running: before it started there
    is no worker to hear from.
    """
    since = liveness_reference(alloc, not_before=not_before)
    if since is None:
        return False
    return (now - since).total_seconds() >= stale_after_s
