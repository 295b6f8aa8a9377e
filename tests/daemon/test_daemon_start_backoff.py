"""The per-partition start-failure backoff (pure): when it starts, how it grows, what clears it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relaymd.daemon.start_backoff import (
    AllocationEnd,
    blocked_partitions,
    update_backoff,
    worker_reported,
)
from relaymd.mailbox.carrier import AllocationFiles
from relaymd.mailbox.models import Heartbeat, WorkerState
from relaymd.models import Allocation, DaemonSettings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = DaemonSettings(start_backoff_s=60, start_backoff_max_s=200)


def _end(
    n: int, partition: str = "gpu", *, reported: bool = False, **update: object
) -> AllocationEnd:
    alloc = Allocation(id=f"a{n}", cluster="c", partition=partition, image="openmm", walltime_s=600)
    return AllocationEnd(
        allocation=alloc.model_copy(update=update),
        state="FAILED",
        exit_code="3:0",
        worker_reported=reported,
    )


def test_backoff_starts_after_the_threshold_and_doubles_up_to_the_cap() -> None:
    state = update_backoff({}, [_end(1)], [], SETTINGS, NOW)
    assert state["gpu"].failures == 1 and state["gpu"].until is None
    assert blocked_partitions(state, NOW) == set()
    waits = []
    for n in range(2, 6):
        state = update_backoff(state, [_end(n)], [], SETTINGS, NOW)
        until = state["gpu"].until
        assert until is not None
        waits.append((until - NOW).total_seconds())
    assert waits == [60, 120, 200, 200]
    assert blocked_partitions(state, NOW) == {"gpu"}
    assert blocked_partitions(state, NOW + timedelta(seconds=201)) == set()
    assert "a5" in state["gpu"].reason and "exit code 3:0" in state["gpu"].reason
    assert "next try in 200 s" in state["gpu"].describe("c", NOW)


def test_a_reporting_worker_clears_its_partition_only() -> None:
    state = update_backoff({}, [_end(1), _end(2), _end(3, "cpu")], [], SETTINGS, NOW)
    assert set(state) == {"gpu", "cpu"}
    state = update_backoff(state, [], ["gpu"], SETTINGS, NOW)
    assert set(state) == {"cpu"}
    state = update_backoff(state, [_end(4, "cpu", reported=True)], [], SETTINGS, NOW)
    assert state == {}


def test_allocations_the_daemon_stopped_are_not_start_failures() -> None:
    stopped = _end(1, stop_requested_at=NOW)
    assert update_backoff({}, [stopped, _end(2, stop_requested_at=NOW)], [], SETTINGS, NOW) == {}


def test_worker_reported_sees_heartbeats_events_and_earlier_contact() -> None:
    alloc = Allocation(id="a1", cluster="c", partition="gpu", image="openmm", walltime_s=600)
    assert not worker_reported(alloc, None)
    assert not worker_reported(alloc, AllocationFiles(allocation_id="a1"))
    assert worker_reported(alloc.model_copy(update={"last_seq": 0}), None)
    assert worker_reported(alloc.model_copy(update={"events_offset": 10}), None)
    beat = Heartbeat(allocation_id="a1", seq=1, state=WorkerState.IDLE)
    assert worker_reported(alloc, AllocationFiles(allocation_id="a1", heartbeat=beat))
