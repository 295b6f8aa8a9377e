"""The steady lane of `decide._allocations` (an allocation with nothing but a heartbeat to
judge skips the phases before liveness) decides exactly what the full path decides.

Every combination below runs twice, once with the lane and once with it switched off, and the
two cycles' decisions must be equal field for field; the lane must also have been taken where
it applies, so the comparison is never between two runs of the full path."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from relaymd.daemon import decide
from relaymd.daemon.decide import decide_cycle
from relaymd.mailbox.carrier import AllocationFiles
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerState
from relaymd.models import DaemonSettings, JobState
from tests.daemon.daemon_factories import T0, ckpt_ref, ev, sched_job
from tests.daemon.test_daemon_decide import decide_input, running_pair

NOW = T0 + timedelta(seconds=600)

HEARTBEATS = {
    "none": None,
    "same seq": dict(seq=5),
    "moved": dict(seq=6, total_steps=40, ns_per_day=12.5),
    "moved, same speed": dict(seq=6, total_steps=30, ns_per_day=10.0),
    "other epoch": dict(seq=6, epoch=1),
    "other job": dict(seq=6, job_id="j9"),
    "idle": dict(seq=6, state=WorkerState.IDLE, job_id=None, epoch=None),
}
SCHEDULER = {
    "running": lambda key: [sched_job(key)],
    "running, other id": lambda key: [sched_job(key, sid="777")],
    "pending": lambda key: [sched_job(key, phase="pending")],
    "ended": lambda key: [sched_job(key, phase="ended", end_state="COMPLETED")],
    "absent": lambda key: [],
}
ALLOCATION = {
    "fresh": dict(seq_changed_at=NOW - timedelta(seconds=5)),
    "stale": dict(seq_changed_at=NOW - timedelta(seconds=500)),
    "stopping": dict(
        seq_changed_at=NOW - timedelta(seconds=5), stop_requested_at=NOW - timedelta(seconds=40)
    ),
    "reserved": dict(
        seq_changed_at=NOW - timedelta(seconds=5), reserved_job_id="j2", reserved_epoch=1
    ),
    "slot": dict(seq_changed_at=NOW - timedelta(seconds=5), group_id="a1g", slot=0, slot_count=2),
}
EVENTS = {
    "none": lambda: ([], 100),
    "offset moved": lambda: ([], 180),
    "checkpoint": lambda: ([ev(EventKind.CHECKPOINT, checkpoint=ckpt_ref(2, 2, 20))], 200),
}


def _case(beat: str, sched: str, alloc_kind: str, events: str, job_state: JobState, grace: float):
    job, alloc = running_pair(last_seq=5, events_offset=100, **ALLOCATION[alloc_kind])
    job = job.model_copy(update={"state": job_state, "total_steps": 30, "ns_per_day": 10.0})
    lines, offset = EVENTS[events]()
    heartbeat = None
    if HEARTBEATS[beat] is not None:
        spec = {"state": WorkerState.RUNNING, "job_id": "j1", "epoch": 2, **HEARTBEATS[beat]}
        heartbeat = Heartbeat(allocation_id="a1", **spec)
    files = AllocationFiles(
        allocation_id="a1", heartbeat=heartbeat, events=lines, events_offset=offset
    )
    settings = DaemonSettings(stale_after_s=60, stop_grace_s=grace)
    return decide_input(
        [alloc],
        [job],
        sched=SCHEDULER[sched](alloc.scheduler_key),
        files=[files],
        now=NOW,
        settings=settings,
    )


CASES = list(
    itertools.product(
        HEARTBEATS,
        SCHEDULER,
        ALLOCATION,
        EVENTS,
        [JobState.RUNNING, JobState.ASSIGNED],
        [30.0, 0.001],
    )
)


@pytest.mark.parametrize("groups", [CASES[i::8] for i in range(8)], ids=lambda g: f"{len(g)}")
def test_the_steady_lane_decides_what_the_full_path_decides(
    groups: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = decide._steady
    for case in groups:
        lane: list[bool] = []

        def counting(cycle, alloc, files, lane=lane):
            steady = real(cycle, alloc, files)
            lane.append(steady)
            return steady

        monkeypatch.setattr(decide, "_steady", counting)
        fast = decide_cycle(_case(*case), lambda: "anew")
        monkeypatch.setattr(decide, "_steady", lambda cycle, alloc, files: False)
        full = decide_cycle(_case(*case), lambda: "anew")
        assert fast.model_dump() == full.model_dump(), case
        # Taken exactly where nothing but the heartbeat is new: listed running under its own
        # id, no reservation, no new events (the heartbeat itself may say anything).
        _, sched, alloc_kind, events, _, _ = case
        expected = sched == "running" and alloc_kind != "reserved" and events == "none"
        assert lane == [expected], case


def test_the_steady_lane_is_taken_for_a_plain_running_allocation() -> None:
    inp = _case("moved", "running", "fresh", "none", JobState.RUNNING, 30.0)
    seen = []
    cycle = decide.Cycle(inp)
    alloc = inp.allocations[0]
    seen.append(decide._steady(cycle, alloc, inp.snapshot.files["a1"]))
    # ...and never with anything new beside the heartbeat.
    for other in [
        _case("moved", "running, other id", "fresh", "none", JobState.RUNNING, 30.0),
        _case("moved", "pending", "fresh", "none", JobState.RUNNING, 30.0),
        _case("moved", "running", "reserved", "none", JobState.RUNNING, 30.0),
        _case("moved", "running", "fresh", "offset moved", JobState.RUNNING, 30.0),
        _case("moved", "running", "fresh", "checkpoint", JobState.RUNNING, 30.0),
    ]:
        c = decide.Cycle(other)
        seen.append(decide._steady(c, other.allocations[0], other.snapshot.files["a1"]))
    assert seen == [True, False, False, False, False, False]
