"""bench/failover.py on its simulated clock: the real daemon cycle moves a job off a dead or
silently hung allocation within the targets (so the benchmark cannot rot unnoticed)."""

from __future__ import annotations

import asyncio

from bench import failover


def test_death_reported_by_slurm_moves_the_job_within_two_poll_intervals() -> None:
    took_s, interval_s = asyncio.run(failover.trial("slurm", 0.5))
    assert 0 < took_s < 2 * interval_s


def test_silent_hang_moves_the_job_within_three_heartbeat_intervals() -> None:
    took_s, _ = asyncio.run(failover.trial("hang", 0.5))
    assert 0 < took_s < 3 * failover.H
