"""Idle allocations (release, keep warm) and pre-written successors (ADR 0009): the pure
per-cycle decisions, each scenario one `decide_cycle` call on rows and files."""

from __future__ import annotations

from datetime import timedelta
from itertools import count

from relaymd.daemon.decide import decide_cycle
from relaymd.daemon.decide.decisions import CycleDecisions, DecideInput
from relaymd.daemon.evidence import claim_key
from relaymd.daemon.provision import ClusterMode
from relaymd.mailbox.carrier import AllocationFiles, ClusterSnapshot
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.models import (
    Allocation,
    AllocationState,
    DaemonSettings,
    Job,
    JobState,
    OperatorRequest,
)
from tests.daemon.daemon_factories import (
    T0,
    ckpt_ref,
    make_alloc,
    make_job,
    make_profile,
    sched_job,
)

NOW = T0 + timedelta(seconds=1000)
R = AllocationState.RUNNING
_ids = count()


def _beat(alloc_id: str, *, state=WorkerState.IDLE, job=None, epoch=None, left_s=600.0, **kw):
    return Heartbeat(
        allocation_id=alloc_id,
        seq=7,
        state=state,
        job_id=job,
        epoch=epoch,
        deadline=NOW + timedelta(seconds=left_s),
        handoff_margin_s=10.0,
        **kw,
    )


def _alloc(alloc_id: str, **fields: object) -> Allocation:
    fields.setdefault("scheduler_id", f"s-{alloc_id}")
    fields.setdefault("last_seq", 7)
    fields.setdefault("seq_changed_at", NOW)
    return make_alloc(alloc_id, state=R, started_at=T0, **fields)


def _files(alloc_id: str, beat: Heartbeat | None, events=(), offset: int = 0) -> AllocationFiles:
    return AllocationFiles(
        allocation_id=alloc_id, heartbeat=beat, events=list(events), events_offset=offset
    )


def _run(
    allocs: list[Allocation],
    jobs: list[Job],
    files: list[AllocationFiles],
    *,
    verified=(),
    started_at=None,
) -> CycleDecisions:
    profile = make_profile(gpus=0)
    return decide_cycle(
        DecideInput(
            now=NOW,
            profile=profile,
            profiles={"c1": profile},
            settings=DaemonSettings(stale_after_s=60, stop_grace_s=30, min_segment_s=120),
            mode=ClusterMode.OPEN,
            usable_clusters={"c1"},
            snapshot=ClusterSnapshot(
                cluster="c1",
                query_ok=True,
                scheduler_jobs={a.id: sched_job(a.id, sid=f"s-{a.id}") for a in allocs},
                files={f.allocation_id: f for f in files},
            ),
            allocations=allocs,
            all_live=allocs,
            jobs={j.id: j for j in jobs},
            verified=set(verified),
            daemon_started_at=started_at,
        ),
        lambda: f"anew{next(_ids)}",
    )


def _kinds(out: CycleDecisions) -> list[str]:
    return [a.kind for a in out.audits]


def _running_job(epoch: int = 2, **fields: object) -> Job:
    return make_job(
        "j1",
        state=JobState.RUNNING,
        epoch=epoch,
        allocation_id="a1",
        checkpoint=ckpt_ref(epoch, 1, 100),
        **fields,
    )


# -- release ------------------------------------------------------------------------------


def test_idle_allocation_is_released_when_no_job_can_use_it() -> None:
    held = make_job("j9", state=JobState.HELD)  # held jobs do not count
    out = _run([_alloc("a2")], [held], [_files("a2", _beat("a2"))])
    a2 = out.allocations["a2"]
    assert a2.stop_requested_at == NOW and a2.note == "releasing: no work"
    assert "allocation_release" in _kinds(out)


def test_idle_allocation_without_time_for_a_segment_is_released_despite_a_queued_job() -> None:
    queued = make_job("j9")
    out = _run([_alloc("a2")], [queued], [_files("a2", _beat("a2", left_s=60))])
    assert out.allocations["a2"].stop_requested_at == NOW
    assert out.bound == []


def test_idle_allocation_kept_warm_for_a_job_handing_off_before_its_deadline() -> None:
    job = _running_job()
    # j1 hands off in ~990 s (beyond the pre-write window); a2 has time for a segment after.
    a1 = _alloc("a1", job_id="j1")
    out = _run(
        [a1, _alloc("a2")],
        [job],
        [
            _files("a1", _beat("a1", state=WorkerState.RUNNING, job="j1", epoch=2, left_s=1000)),
            _files("a2", _beat("a2", left_s=3000)),
        ],
    )
    a2 = out.allocations["a2"]
    assert a2.stop_requested_at is None
    assert a2.note == "warm for job j1 handing off in ~990s"
    assert "allocation_release" not in _kinds(out)


def test_idle_allocation_ending_before_the_handoff_is_released() -> None:
    job = _running_job()
    a1 = _alloc("a1", job_id="j1")
    out = _run(
        [a1, _alloc("a2")],
        [job],
        [
            _files("a1", _beat("a1", state=WorkerState.RUNNING, job="j1", epoch=2, left_s=1000)),
            _files("a2", _beat("a2", left_s=900)),  # gone before j1 needs a new allocation
        ],
    )
    assert out.allocations["a2"].stop_requested_at == NOW


# -- a successor allocation submitted ahead ---------------------------------------------------
# Windows with the profile's 60 s poll and the default 60 s pre-write lead: a successor is
# reserved when the handoff is due within 120 s, and provisioned one poll earlier (180 s).


def _running_files(left_s: float) -> AllocationFiles:
    return _files("a1", _beat("a1", state=WorkerState.RUNNING, job="j1", epoch=2, left_s=left_s))


def test_a_job_due_to_hand_off_within_a_poll_of_the_window_gets_an_allocation_submitted() -> None:
    # Due in 160 s, nothing idle or pending: submitted now, it runs idle by the next cycle,
    # which pre-writes it before the handoff.
    out = _run([_alloc("a1", job_id="j1")], [_running_job()], [_running_files(170)])
    assert len(out.new_allocations) == 1
    assert out.new_allocations[0].state is AllocationState.SUBMITTING


def test_no_allocation_ahead_for_a_handoff_beyond_the_window() -> None:
    out = _run([_alloc("a1", job_id="j1")], [_running_job()], [_running_files(1000)])
    assert out.new_allocations == []


def test_no_allocation_ahead_when_an_idle_or_pending_one_will_take_the_job() -> None:
    job = _running_job()
    idle = _run(
        [_alloc("a1", job_id="j1"), _alloc("a2")],
        [job],
        [_running_files(170), _files("a2", _beat("a2", left_s=3000))],
    )
    assert idle.new_allocations == []
    assert idle.allocations["a2"].note == "warm for job j1 handing off in ~160s"
    pending = make_alloc("a3", state=AllocationState.PENDING, scheduler_id="s-a3")
    out = _run([_alloc("a1", job_id="j1"), pending], [job], [_running_files(170)])
    assert out.new_allocations == [] and out.cancel == {}


def test_no_allocation_ahead_once_the_successor_is_pre_written_or_the_job_is_stopping() -> None:
    prewritten = _running_job(prewritten_epoch=3)
    out = _run([_alloc("a1", job_id="j1")], [prewritten], [_running_files(170)])
    assert out.new_allocations == []
    stopping = _running_job(operator_request=OperatorRequest.CANCEL)
    out = _run([_alloc("a1", job_id="j1")], [stopping], [_running_files(170)])
    assert out.new_allocations == []


# -- reservation ----------------------------------------------------------------------------


def _near_handoff(**job_fields: object) -> tuple[list[Allocation], Job, list[AllocationFiles]]:
    job = _running_job(**job_fields)
    allocs = [_alloc("a1", job_id="j1"), _alloc("a2")]
    files = [
        _files("a1", _beat("a1", state=WorkerState.RUNNING, job="j1", epoch=2, left_s=40)),
        _files("a2", _beat("a2", left_s=3000)),
    ]
    return allocs, job, files


def test_a_job_near_its_handoff_gets_an_idle_allocation_reserved() -> None:
    allocs, job, files = _near_handoff()
    out = _run(allocs, [job], files)
    a2 = out.allocations["a2"]
    assert (a2.reserved_job_id, a2.reserved_epoch) == ("j1", 3)
    assert a2.reserved_until is not None and a2.reserved_until > NOW + timedelta(seconds=40)
    assert a2.stop_requested_at is None
    assert out.jobs["j1"].prewritten_epoch == 3
    assert out.jobs["j1"].epoch == 2  # the predecessor's epoch is untouched until the handoff
    assert "successor_reserved" in _kinds(out)


def _reserved(**fields: object) -> Allocation:
    return _alloc(
        "a2",
        reserved_job_id="j1",
        reserved_epoch=3,
        reserved_until=NOW + timedelta(seconds=100),
        **fields,
    )


def _waiting_beat(state=WorkerState.PREPARING) -> Heartbeat:
    return _beat("a2", state=state, job="j1", epoch=3, left_s=3000, awaiting_handoff_of=2)


def _handoff_read_with_successor_started(reserved: Allocation) -> CycleDecisions:
    """One cycle reading j1's epoch-2 handoff (a1) and the reserved a2 already running
    epoch 3 from it."""
    job = _running_job(prewritten_epoch=3)
    final = ckpt_ref(2, 2, 180)
    a1_events = [
        WorkerEvent(
            kind=EventKind.CHECKPOINT, allocation_id="a1", job_id="j1", epoch=2, checkpoint=final
        ),
        WorkerEvent(
            kind=EventKind.HANDOFF, allocation_id="a1", job_id="j1", epoch=2, checkpoint=final
        ),
    ]
    # The successor found the marker before this read: its events come in the same cycle.
    a2_events = [
        WorkerEvent(
            kind=EventKind.STARTED,
            allocation_id="a2",
            job_id="j1",
            epoch=3,
            step=180,
            checkpoint=final,
        )
    ]
    return _run(
        # The reserved allocation is listed first: the cycle still decides it last.
        [reserved, _alloc("a1", job_id="j1")],
        [job],
        [
            _files("a1", None, a1_events, offset=200),
            _files("a2", _waiting_beat(WorkerState.RUNNING), a2_events, offset=90),
        ],
        verified={claim_key("j1", final)},
    )


def test_handoff_activates_the_reservation_at_the_pre_written_epoch() -> None:
    out = _handoff_read_with_successor_started(_reserved())
    final = ckpt_ref(2, 2, 180)
    j1 = out.jobs["j1"]
    assert (j1.epoch, j1.allocation_id, j1.state) == (3, "a2", JobState.RUNNING)
    assert j1.step == 180 and j1.checkpoint == final
    assert out.activated == ["j1"] and out.bound == []
    a2 = out.allocations["a2"]
    assert a2.job_id == "j1" and a2.reserved_job_id is None and a2.events_offset == 90
    assert [s.epoch for s in out.new_segments] == [3]
    kinds = _kinds(out)
    assert "successor_activated" in kinds and "stale_event_ignored" not in kinds


def test_activation_judges_the_successor_alive_on_this_cycles_heartbeat() -> None:
    # The poll (here 100 s since the seq last moved) may be longer than stale_after_s (60 s):
    # the heartbeat read in this very cycle moved the seq, so the successor is alive.
    before = _reserved(last_seq=6, seq_changed_at=NOW - timedelta(seconds=100))
    out = _handoff_read_with_successor_started(before)
    assert out.activated == ["j1"]
    assert out.jobs["j1"].allocation_id == "a2"
    assert out.allocations["a2"].stop_requested_at is None
    assert "successor_withdrawn" not in _kinds(out)


def test_successor_events_wait_while_the_handoff_is_not_yet_seen() -> None:
    job = _running_job(prewritten_epoch=3)
    started = WorkerEvent(kind=EventKind.STARTED, allocation_id="a2", job_id="j1", epoch=3)
    out = _run(
        [_alloc("a1", job_id="j1"), _reserved(events_offset=10)],
        [job],
        [
            _files("a1", _beat("a1", state=WorkerState.RUNNING, job="j1", epoch=2, left_s=5)),
            _files("a2", _waiting_beat(WorkerState.RUNNING), [started], offset=90),
        ],
    )
    a2 = out.allocations.get("a2")
    assert a2 is None or (a2.events_offset == 10 and a2.reserved_job_id == "j1")
    assert "stale_event_ignored" not in _kinds(out)


def test_reservation_withdrawn_when_the_job_is_cancelled() -> None:
    job = _running_job(prewritten_epoch=3, operator_request=OperatorRequest.CANCEL)
    out = _run(
        [_alloc("a1", job_id="j1"), _reserved()],
        [job],
        [
            _files("a1", _beat("a1", state=WorkerState.RUNNING, job="j1", epoch=2, left_s=30)),
            _files("a2", _waiting_beat()),
        ],
    )
    a2 = out.allocations["a2"]
    assert a2.reserved_job_id is None and a2.reserved_epoch is None
    assert a2.stop_requested_at is None  # it only waited: back to idle, nothing to stop
    [withdrawn] = [a for a in out.audits if a.kind == "successor_withdrawn"]
    assert "operator cancel" in withdrawn.message


def test_reservation_withdrawn_when_the_predecessor_fails_and_its_epoch_is_never_reused() -> None:
    job = _running_job(prewritten_epoch=3)
    failed = WorkerEvent(
        kind=EventKind.FAILED,
        allocation_id="a1",
        job_id="j1",
        epoch=2,
        reason="node trouble",
        retryable=True,
    )
    out = _run(
        [_alloc("a1", job_id="j1"), _reserved(), _alloc("a3")],
        [job],
        [
            _files("a1", None, [failed], offset=50),
            _files("a2", _waiting_beat()),
            _files("a3", _beat("a3", left_s=3000)),
        ],
    )
    assert out.allocations["a2"].reserved_job_id is None
    assert "successor_withdrawn" in _kinds(out)
    # Late binding takes over, on another idle worker, and skips the pre-written epoch 3.
    j1 = out.jobs["j1"]
    assert (j1.allocation_id, j1.epoch, j1.state) == ("a3", 4, JobState.ASSIGNED)
    assert out.bound == ["j1"] and out.activated == []


def test_reservation_revalidated_after_a_daemon_restart() -> None:
    started = NOW - timedelta(seconds=1)
    # Still valid: the predecessor still runs its epoch; the reservation stays.
    job = _running_job(prewritten_epoch=3)
    files = [
        _files("a1", _beat("a1", state=WorkerState.RUNNING, job="j1", epoch=2, left_s=30)),
        _files("a2", _waiting_beat()),
    ]
    out = _run([_alloc("a1", job_id="j1"), _reserved()], [job], files, started_at=started)
    assert "a2" not in out.allocations or out.allocations["a2"].reserved_job_id == "j1"
    assert "successor_withdrawn" not in _kinds(out)
    # While the daemon was down the predecessor ended without a handoff (the job is back in
    # the queue): the first cycle withdraws the reservation.
    queued = make_job("j1", epoch=2, checkpoint=ckpt_ref(2, 1, 100), prewritten_epoch=3)
    out = _run([_reserved()], [queued], [_files("a2", _waiting_beat())], started_at=started)
    assert out.allocations["a2"].reserved_job_id is None
    [withdrawn] = [a for a in out.audits if a.kind == "successor_withdrawn"]
    assert "without a handoff" in withdrawn.message
    assert out.jobs.get("j1") is None or out.jobs["j1"].allocation_id != "a2"


def test_withdrawn_successor_that_already_runs_the_fenced_epoch_is_stopped() -> None:
    job = make_job("j1", state=JobState.CANCELLED, epoch=2, prewritten_epoch=3)
    out = _run([_reserved()], [job], [_files("a2", _waiting_beat(WorkerState.RUNNING))])
    a2 = out.allocations["a2"]
    assert a2.reserved_job_id is None and a2.stop_requested_at == NOW
