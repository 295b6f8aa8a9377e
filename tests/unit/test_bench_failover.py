"""bench/failover.py on its simulated clock: the real daemon cycle moves a job off a dead or
silently hung allocation within the targets (so the benchmark cannot rot unnoticed)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def failover() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        import failover as module
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_death_reported_by_slurm_moves_the_job_within_two_poll_intervals(
    failover: ModuleType,
) -> None:
    took_s, interval_s = asyncio.run(failover.trial("slurm", 0.5))
    assert 0 < took_s < 2 * interval_s


def test_silent_hang_moves_the_job_within_three_heartbeat_intervals(
    failover: ModuleType,
) -> None:
    took_s, _ = asyncio.run(failover.trial("hang", 0.5))
    assert 0 < took_s < 3 * failover.H
