"""GPU slots in one cycle's decisions (ADR 0026), pure: which cancel becomes a `kill`, how the
scheduler's report and orphan checks treat a group, held slots' liveness and release."""

from __future__ import annotations

from datetime import timedelta
from itertools import count

from relaymd.daemon.decide import decide_cycle
from relaymd.daemon.decide.decisions import DecideInput
from relaymd.daemon.provision import ClusterMode
from relaymd.mailbox.carrier import AllocationFiles, ClusterSnapshot
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.models import Allocation, AllocationState, DaemonSettings, Job, JobState, Partition
from tests.daemon.daemon_factories import T0, make_alloc, make_job, make_profile, sched_job

R = AllocationState.RUNNING
_ids = count()


def slot(i: int, n: int = 2, gid: str = "g1", **fields: object) -> Allocation:
    defaults: dict[str, object] = {
        "state": R,
        "scheduler_id": "100",
        "started_at": T0,
        "seq_changed_at": T0,
        "last_seq": 1,
    }
    return make_alloc(
        f"{gid}-g{i}",
        partition="quad",
        group_id=gid,
        slot=i,
        slot_count=n,
        **(defaults | fields),
    )


def running(job_id: str, alloc_id: str) -> Job:
    return make_job(job_id, state=JobState.RUNNING, epoch=1, allocation_id=alloc_id)


def decide(allocs, jobs, *, sched=None, files=None, now=T0):
    profile = make_profile(
        partitions=[Partition(name="quad", walltime_minutes=60, gpus_per_allocation=2)]
    )
    inp = DecideInput(
        now=now,
        profile=profile,
        profiles={"c1": profile},
        settings=DaemonSettings(stale_after_s=60, stop_grace_s=30),
        mode=ClusterMode.OPEN,
        usable_clusters={"c1"},
        snapshot=ClusterSnapshot(
            cluster="c1",
            query_ok=True,
            scheduler_jobs={s.allocation_id: s for s in (sched or [sched_job("g1")])},
            files={f.allocation_id: f for f in (files or [])},
        ),
        allocations=allocs,
        all_live=allocs,
        jobs={j.id: j for j in jobs},
    )
    return decide_cycle(inp, lambda: f"anew{next(_ids)}")


def beat(alloc_id: str, seq: int, state: WorkerState, **fields: object) -> AllocationFiles:
    return AllocationFiles(
        allocation_id=alloc_id,
        heartbeat=Heartbeat(allocation_id=alloc_id, seq=seq, state=state, **fields),
    )


def test_a_slot_that_will_not_stop_is_killed_alone_while_its_group_works() -> None:
    late = T0 + timedelta(seconds=40)
    stuck = slot(0, job_id="j0", stop_requested_at=T0)
    busy = slot(1, job_id="j1")
    jobs = [running("j0", stuck.id), running("j1", busy.id)]
    files = [beat(busy.id, 2, WorkerState.RUNNING, job_id="j1", epoch=1)]
    out = decide([stuck, busy], jobs, files=files, now=late)
    assert out.cancel == {}
    assert out.allocations[stuck.id].kill_requested_at == late
    assert out.jobs["j0"].state is JobState.QUEUED  # requeued, fenced by the next epoch
    assert [a.kind for a in out.audits].count("slot_kill") == 1
    # The other slot has no work left: the whole group is cancelled (one scancel).
    idle = slot(1)
    out = decide([stuck, idle], jobs[:1], files=[beat(idle.id, 2, WorkerState.IDLE)], now=late)
    assert out.cancel == {stuck.id: "100"}


def test_the_groups_report_reaches_every_slot_and_its_id_is_no_orphan() -> None:
    pending = [
        slot(i, state=AllocationState.PENDING, started_at=None, seq_changed_at=None, last_seq=None)
        for i in range(2)
    ]
    out = decide(pending, [], sched=[sched_job("g1", "running")])
    assert {out.allocations[a.id].state for a in pending} == {R}
    assert "orphan_cancel" not in [a.kind for a in out.audits]
    # A group id nobody knows is an orphan, cancelled by its scheduler id.
    out = decide(pending, [], sched=[sched_job("g1"), sched_job("gx", sid="7")])
    assert out.cancel == {"gx": "7"}
    # The group ends: both slots end with it, the bound job requeued.
    busy = [slot(0, job_id="j0"), slot(1)]
    out = decide(busy, [running("j0", busy[0].id)], sched=[sched_job("g1", "ended", "TIMEOUT")])
    assert {out.allocations[a.id].state for a in busy} == {AllocationState.ENDED}
    assert out.jobs["j0"].state is JobState.QUEUED


def test_slot_exited_ends_that_slot_and_classifies_a_killed_worker() -> None:
    busy = [slot(0, job_id="j0"), slot(1, job_id="j1")]
    jobs = [running("j0", busy[0].id), running("j1", busy[1].id)]
    died = AllocationFiles(
        allocation_id=busy[0].id,
        events=[WorkerEvent(kind=EventKind.SLOT_EXITED, allocation_id=busy[0].id, exit_code=-9)],
        events_offset=80,
    )
    out = decide(busy, jobs, files=[died])
    ended = out.allocations[busy[0].id]
    assert ended.state is AllocationState.ENDED and "FAILED" in (ended.end_reason or "")
    assert out.jobs["j0"].state is JobState.QUEUED and "j1" not in out.jobs
    assert busy[1].id not in out.allocations or out.allocations[busy[1].id].state is R
    assert out.cancel == {}


def test_held_slots_are_alive_not_supply_and_not_released() -> None:
    lead, held = slot(0, job_id="jbig"), slot(1, held_by="g1-g0")
    job = running("jbig", lead.id).model_copy(
        update={"spec": make_job(gpus=2).spec.model_copy(update={"title": "big"})}
    )
    later = T0 + timedelta(seconds=90)  # past stale_after_s since T0
    files = [
        beat(lead.id, 2, WorkerState.RUNNING, job_id="jbig", epoch=1),
        beat(held.id, 2, WorkerState.HELD),
    ]
    queued = make_job("jq", gpus=1)
    out = decide([lead, held], [job, queued], files=files, now=later)
    row = out.allocations.get(held.id, held)
    assert row.stop_requested_at is None and row.held_by == lead.id
    assert "jq" not in out.bound  # a held slot takes no job
    assert not [a for a in out.audits if a.kind in ("worker_hung", "allocation_release")]


def test_a_group_dying_at_start_is_one_failed_start() -> None:
    never = [
        slot(i, state=AllocationState.PENDING, started_at=None, seq_changed_at=None, last_seq=None)
        for i in range(2)
    ]
    out = decide(never, [], sched=[sched_job("g1", "ended", "FAILED")])
    assert out.backoff["quad"].failures == 1


def test_held_slots_wait_for_a_stopped_lead_to_leave_before_they_are_free() -> None:
    lead = slot(0, job_id="jbig", stop_requested_at=T0 - timedelta(seconds=5))
    held = slot(1, held_by="g1-g0")
    job = running("jbig", lead.id).model_copy(update={"spec": make_job(gpus=2).spec})
    files = [beat(held.id, 2, WorkerState.HELD)]
    # Stale lead: stopped and requeued, but its engine may still run on the held GPU.
    late = T0 + timedelta(seconds=61)
    out = decide([lead, held], [job], files=files, now=late)
    assert out.jobs["jbig"].state is JobState.QUEUED
    assert out.allocations.get(held.id, held).held_by == lead.id
    # The supervisor reports the lead's worker gone: the held slot is free in that cycle.
    gone = AllocationFiles(
        allocation_id=lead.id,
        events=[WorkerEvent(kind=EventKind.SLOT_EXITED, allocation_id=lead.id, exit_code=-9)],
        events_offset=80,
    )
    unbound = lead.model_copy(update={"job_id": None})
    requeued = out.jobs["jbig"]
    out = decide([unbound, held], [requeued], files=[*files, gone], now=late)
    assert out.allocations[held.id].held_by is None


def test_a_two_gpu_job_does_not_take_the_slot_a_higher_priority_job_needs() -> None:
    idle = [slot(i, n=2) for i in range(2)]
    files = [beat(a.id, 2, WorkerState.IDLE) for a in idle]
    big = make_job("jbig", gpus=2, created_s=0)
    urgent = make_job("jone", gpus=1, priority=5, created_s=1)
    out = decide(idle, [big, urgent], files=files)
    assert out.bound == ["jone"]
    # Alone, the 2-GPU job takes both slots: slot 0 leads, slot 1 is held.
    out = decide(idle, [big], files=files)
    assert out.bound == ["jbig"]
    assert out.allocations["g1-g0"].job_id == "jbig"
    assert out.allocations["g1-g1"].held_by == "g1-g0"
