"""The daemon runs Python's cyclic collector itself, between cycles (relaymd.daemon.collector).

Verdicts come from the interpreter: `gc.callbacks` reports every collection that runs, and a
weak reference tells whether a garbage reference cycle has been freed.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from relaymd.daemon.collector import CollectorSchedule


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def collections() -> Iterator[list[int]]:
    """The generation of every collection that runs while the test does."""
    seen: list[int] = []

    def note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(note)
    try:
        yield seen
    finally:
        gc.callbacks.remove(note)


def test_no_collection_between_schedules_then_one_full_pass(collections: list[int]) -> None:
    now = [0.0]
    schedule = CollectorSchedule(every_s=600, clock=lambda: now[0])
    was_enabled = gc.isenabled()
    schedule.start()
    try:
        garbage = Node()
        freed = weakref.ref(garbage)
        del garbage
        # Far more allocations than one threshold-0 pass: none runs, the cycle stays.
        rows = [{"id": i, "seen": [i]} for i in range(200_000)]
        assert collections == [] and freed() is not None
        now[0] = 599.0
        schedule.between_cycles()
        assert collections == [] and freed() is not None
        now[0] = 600.0
        schedule.between_cycles()
        assert collections == [2] and freed() is None  # one full collection, the cycle freed
        assert schedule.collections == 1
        now[0] = 900.0
        schedule.between_cycles()
        assert collections == [2]  # the next one is due 600 s after the last
        del rows
    finally:
        schedule.stop()
    assert gc.isenabled() == was_enabled


def test_the_daemon_collects_between_its_cycles_not_during_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collections: list[int]
) -> None:
    """A real daemon run (local cluster) with the collector due before every cycle ends:
    each collection happens after a cycle, none inside one."""
    from relaymd.config import load_config
    from relaymd.daemon import loop
    from relaymd.daemon.runner import ClusterRunner
    from tests.daemon.daemon_e2e_support import local_config

    monkeypatch.setattr(loop, "CollectorSchedule", lambda: CollectorSchedule(every_s=0.0))
    in_cycle: list[bool] = []
    cycle = ClusterRunner.cycle
    inside = [False]

    async def watched(self: ClusterRunner) -> object:
        inside[0] = True
        before = len(collections)
        try:
            return await cycle(self)
        finally:
            inside[0] = False
            in_cycle.append(len(collections) != before)

    monkeypatch.setattr(ClusterRunner, "cycle", watched)
    monkeypatch.setenv("RELAYMD_STATE_DIR", str(tmp_path / "xdg"))
    enabled_before = gc.isenabled()
    asyncio.run(loop.run_daemon(load_config(local_config(tmp_path, walltime_s=60)), max_cycles=3))
    assert in_cycle == [False, False, False]
    assert collections.count(2) >= 2  # after the 1st and 2nd cycle (the 3rd ends the run)
    assert gc.isenabled() == enabled_before
