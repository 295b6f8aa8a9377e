"""The per-cycle decisions: fencing, liveness, crash-safe submission, operator requests."""

from __future__ import annotations

from datetime import timedelta
from itertools import count

import pytest

from relaymd.daemon.decide import decide_cycle
from relaymd.daemon.decide.cycle import Cycle
from relaymd.daemon.decide.decisions import DecideInput
from relaymd.daemon.evidence import claim_key
from relaymd.daemon.provision import ClusterMode
from relaymd.mailbox.carrier import AllocationFiles, ClusterSnapshot
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerState
from relaymd.models import (
    AllocationState,
    DaemonSettings,
    JobState,
    OperatorRequest,
    SegmentOutcome,
)
from relaymd.models.job import JobTransitionError
from tests.daemon.daemon_factories import (
    T0,
    ckpt_ref,
    ev,
    make_alloc,
    make_job,
    make_profile,
    sched_job,
)

R, P, S, E = (
    AllocationState.RUNNING,
    AllocationState.PENDING,
    AllocationState.SUBMITTING,
    AllocationState.ENDED,
)
_ids = count()


def new_id() -> str:
    return f"anew{next(_ids)}"


def beat(seq: int, state=WorkerState.RUNNING, job="j1", epoch=2) -> Heartbeat:
    return Heartbeat(allocation_id="a1", seq=seq, state=state, job_id=job, epoch=epoch)


def decide_input(
    allocs, jobs, *, sched=None, files=None, now=T0, verified=(), settings=None, **kw
) -> DecideInput:
    snapshot = ClusterSnapshot(
        cluster="c1",
        query_ok=True,
        scheduler_jobs={s.allocation_id: s for s in (sched or [])},
        files={f.allocation_id: f for f in (files or [])},
    )
    profile = make_profile(max_running=kw.pop("max_running", 4))
    return DecideInput(
        now=now,
        profile=profile,
        profiles={"c1": profile},
        settings=settings or DaemonSettings(stale_after_s=60, stop_grace_s=30),
        mode=kw.pop("mode", ClusterMode.OPEN),
        usable_clusters={"c1"},
        snapshot=snapshot,
        allocations=allocs,
        all_live=[a for a in allocs if a.state is not E],
        jobs={j.id: j for j in jobs},
        verified=set(verified),
        **kw,
    )


def run(allocs, jobs, **kw):
    return decide_cycle(decide_input(allocs, jobs, **kw), new_id)


def running_pair(**alloc_fields):
    job = make_job(
        "j1", state=JobState.RUNNING, epoch=2, allocation_id="a1", checkpoint=ckpt_ref(2, 1, 10)
    )
    alloc = make_alloc(
        "a1", state=R, job_id="j1", scheduler_id="100", started_at=T0, **alloc_fields
    )
    return job, alloc


def test_only_verified_checkpoints_of_the_current_epoch_move_the_pointer() -> None:
    job, alloc = running_pair()
    events = [
        ev(EventKind.CHECKPOINT, epoch=1, checkpoint=ckpt_ref(1, 9, 90)),
        ev(EventKind.CHECKPOINT, checkpoint=ckpt_ref(2, 2, 20)),
        ev(EventKind.CHECKPOINT, checkpoint=ckpt_ref(2, 3, 30)),
    ]
    files = AllocationFiles(allocation_id="a1", heartbeat=beat(1), events=events, events_offset=300)
    verified = {claim_key("j1", ckpt_ref(1, 9, 90)), claim_key("j1", ckpt_ref(2, 2, 20))}
    out = run([alloc], [job], sched=[sched_job("a1")], files=[files], verified=verified)
    new = out.jobs["j1"]
    assert (new.checkpoint.epoch, new.checkpoint.seq, new.step) == (2, 2, 20)
    kinds = [a.kind for a in out.audits]
    assert "stale_event_ignored" in kinds and "checkpoint_rejected" in kinds
    assert out.allocations["a1"].events_offset == 300
    assert out.checkpointed == ["j1"]


def test_old_epoch_terminal_event_is_ignored() -> None:
    job, alloc = running_pair()
    late = ev(EventKind.COMPLETED, epoch=1, step=100)
    files = AllocationFiles(allocation_id="a1", heartbeat=beat(1), events=[late], events_offset=10)
    out = run([alloc], [job], sched=[sched_job("a1")], files=[files])
    assert "j1" not in out.jobs or out.jobs["j1"].state is JobState.RUNNING


def test_handoff_requeues_and_the_job_is_bound_again_under_a_new_epoch() -> None:
    job, alloc = running_pair()
    idle = make_alloc("a2", state=R, scheduler_id="101", started_at=T0)
    handoff = ev(EventKind.HANDOFF, checkpoint=ckpt_ref(2, 1, 10))
    files = [
        AllocationFiles(
            allocation_id="a1", heartbeat=beat(3, WorkerState.EXITING), events=[handoff]
        ),
        AllocationFiles(
            allocation_id="a2",
            heartbeat=Heartbeat(allocation_id="a2", seq=1, state=WorkerState.IDLE),
        ),
    ]
    out = run(
        [alloc, idle], [job], sched=[sched_job("a1"), sched_job("a2", sid="101")], files=files
    )
    assert [(c.epoch, c.outcome) for c in out.closed_segments] == [(2, SegmentOutcome.HANDOFF)]
    j = out.jobs["j1"]
    assert (j.state, j.epoch, j.allocation_id, j.step) == (JobState.ASSIGNED, 3, "a2", 10)
    assert out.bound == ["j1"] and out.new_segments[0].epoch == 3
    assert out.allocations["a1"].job_id is None and out.allocations["a1"].end_reason
    assert out.new_allocations == []  # the idle worker covered the demand


def test_allocation_death_reported_by_slurm_requeues_and_provisions() -> None:
    job, alloc = running_pair()
    out = run(
        [alloc],
        [job],
        sched=[sched_job("a1", "ended", "NODE_FAIL")],
        files=[AllocationFiles(allocation_id="a1")],
    )
    assert out.jobs["j1"].state is JobState.QUEUED and out.jobs["j1"].retries == 0
    assert out.allocations["a1"].state is E
    assert out.closed_segments[0].outcome is SegmentOutcome.LOST
    assert len(out.new_allocations) == 1 and out.new_allocations[0].state is S
    assert out.want_log == {"a1": "j1"}


def test_hung_worker_is_stopped_requeued_then_cancelled_after_grace() -> None:
    job, alloc = running_pair(last_seq=5, seq_changed_at=T0)
    files = [AllocationFiles(allocation_id="a1", heartbeat=beat(5))]
    out = run([alloc], [job], sched=[sched_job("a1")], files=files, now=T0 + timedelta(seconds=59))
    assert "j1" not in out.jobs
    out = run([alloc], [job], sched=[sched_job("a1")], files=files, now=T0 + timedelta(seconds=61))
    assert out.jobs["j1"].state is JobState.QUEUED
    stopped = out.allocations["a1"]
    assert stopped.stop_requested_at is not None and stopped.job_id is None
    assert out.cancel == {}
    later = run(
        [stopped],
        [out.jobs["j1"]],
        sched=[sched_job("a1")],
        files=files,
        now=T0 + timedelta(seconds=95),
    )
    assert later.cancel == {"a1": "100"}


def test_submitting_row_is_adopted_by_name_or_dropped_after_grace() -> None:
    pending = make_alloc("a1", state=S)
    out = run([pending], [], sched=[sched_job("a1", "pending", sid="777")])
    assert out.allocations["a1"].state is P and out.allocations["a1"].scheduler_id == "777"
    assert "allocation_adopted" in [a.kind for a in out.audits]
    # Not found, within the grace period: wait (the sbatch may still be running).
    out = run([pending], [], now=T0 + timedelta(seconds=10), submit_grace_s=60)
    assert "a1" not in out.allocations
    out = run([pending], [], now=T0 + timedelta(seconds=61), submit_grace_s=60)
    assert out.allocations["a1"].state is E


def test_unknown_relaymd_jobs_are_cancelled_as_orphans() -> None:
    out = run([], [], sched=[sched_job("azzz", "pending", sid="999")])
    assert out.cancel == {"azzz": "999"}


def test_demand_is_not_provisioned_twice() -> None:
    jobs = [make_job("j1"), make_job("j2", created_s=1)]
    out = run([], jobs)
    assert len(out.new_allocations) == 2
    # Next cycle sees its own submitting rows: nothing more.
    out2 = run(out.new_allocations, jobs, now=T0 + timedelta(seconds=1), submit_grace_s=60)
    assert out2.new_allocations == []


def test_operator_cancel_stops_worker_then_cancels_on_stopped_event() -> None:
    job, alloc = running_pair()
    job = job.model_copy(update={"operator_request": OperatorRequest.CANCEL})
    files = [AllocationFiles(allocation_id="a1", heartbeat=beat(2))]
    out = run([alloc], [job], sched=[sched_job("a1")], files=files)
    assert out.allocations["a1"].stop_requested_at is not None
    assert "j1" not in out.jobs  # not yet: the worker checkpoints first
    stopped = ev(EventKind.STOPPED)
    files = [
        AllocationFiles(
            allocation_id="a1", heartbeat=beat(3, WorkerState.EXITING), events=[stopped]
        )
    ]
    out = run([out.allocations["a1"]], [job], sched=[sched_job("a1")], files=files)
    assert out.jobs["j1"].state is JobState.CANCELLED
    queued = make_job("j2", operator_request=OperatorRequest.CANCEL)
    assert run([], [queued]).jobs["j2"].state is JobState.CANCELLED


def test_repeated_application_failure_fails_the_job_with_its_log() -> None:
    job, alloc = running_pair()
    job = job.model_copy(update={"retries": 2})
    failed = ev(EventKind.FAILED, reason="NaN", log_tail=["x"])
    files = [
        AllocationFiles(allocation_id="a1", heartbeat=beat(2, WorkerState.IDLE), events=[failed])
    ]
    out = run([alloc], [job], sched=[sched_job("a1")], files=files)
    final = out.jobs["j1"]
    assert (
        final.state is JobState.FAILED and final.log_tail == ["x"] and "NaN" in final.failure_reason
    )


def test_absent_from_squeue_is_not_finished_until_sacct_or_grace() -> None:
    job, alloc = running_pair()
    files = [AllocationFiles(allocation_id="a1", heartbeat=beat(1))]
    out = run([alloc], [job], sched=[], files=files, vanished_grace_s=30)
    assert "a1" not in out.allocations or out.allocations["a1"].state is R
    assert "a1" in out.vanished_since
    later = run(
        [alloc],
        [job],
        sched=[],
        files=files,
        now=T0 + timedelta(seconds=31),
        vanished_since=out.vanished_since,
        vanished_grace_s=30,
    )
    assert later.allocations["a1"].state is E and later.jobs["j1"].state is JobState.QUEUED


def test_pending_allocation_for_a_vram_job_is_kept_across_cycles() -> None:
    job = make_job("j1", gpus=1, min_vram_gib=16)
    pending = make_alloc("a1", state=P, scheduler_id="100")
    for seconds in (0, 10, 20):
        out = run(
            [pending],
            [job],
            sched=[sched_job("a1", "pending")],
            now=T0 + timedelta(seconds=seconds),
        )
        assert out.cancel == {} and out.new_allocations == []


def test_lost_not_needed_cancel_is_sent_again() -> None:
    pending = make_alloc("a1", state=P, scheduler_id="100")
    out = run([pending], [], sched=[sched_job("a1", "pending")])
    assert out.cancel == {"a1": "100"}
    committed = out.allocations["a1"]
    assert committed.end_reason == "not needed" and committed.stop_requested_at == T0
    # The scancel never ran (crash or transport error): squeue still shows it pending.
    out = run([committed], [], sched=[sched_job("a1", "pending")], now=T0 + timedelta(seconds=10))
    assert out.cancel == {}  # within the stop grace: the first scancel may still land
    out = run([committed], [], sched=[sched_job("a1", "pending")], now=T0 + timedelta(seconds=31))
    assert out.cancel == {"a1": "100"}
    # Once the scheduler reports it gone, it ends and nothing more is sent.
    out = run(
        [committed],
        [],
        sched=[sched_job("a1", "ended", end_state="CANCELLED")],
        now=T0 + timedelta(seconds=62),
    )
    assert out.cancel == {} and out.allocations["a1"].state is E


def test_disabled_cluster_cancels_pending_and_lets_running_finish() -> None:
    job, running = running_pair()
    pending = make_alloc("a2", state=P, scheduler_id="101", submitted_s=1)
    queued = make_job("j2", created_s=1)
    files = [AllocationFiles(allocation_id="a1", heartbeat=beat(2))]
    out = run(
        [running, pending],
        [job, queued],
        sched=[sched_job("a1"), sched_job("a2", "pending", sid="101")],
        files=files,
        mode=ClusterMode.DISABLED,
    )
    assert out.cancel == {"a2": "101"}
    assert out.allocations["a2"].end_reason == "cluster disabled"
    assert out.new_allocations == []
    # The running allocation keeps its job: no stop, no cancel, no requeue.
    kept = out.allocations.get("a1", running)
    assert kept.stop_requested_at is None and kept.job_id == "j1"
    assert out.jobs.get("j1", job).state is JobState.RUNNING


def test_disabled_cluster_binds_no_job_to_its_idle_workers() -> None:
    idle = make_alloc("a2", state=R, scheduler_id="101", started_at=T0)
    files = [
        AllocationFiles(
            allocation_id="a2",
            heartbeat=Heartbeat(allocation_id="a2", seq=1, state=WorkerState.IDLE),
        )
    ]
    args = ([idle], [make_job("j1")])
    kw = {"sched": [sched_job("a2", sid="101")], "files": files}
    assert run(*args, **kw).bound == ["j1"]
    assert run(*args, **kw, mode=ClusterMode.DISABLED).bound == []


def test_restart_does_not_make_old_heartbeats_stale_at_once() -> None:
    # Last seq change seen 3 hours ago, before the daemon restarted at T0; this cycle's
    # heartbeat read came back empty.
    job, alloc = running_pair(last_seq=5, seq_changed_at=T0 - timedelta(hours=3))
    files = [AllocationFiles(allocation_id="a1", heartbeat=None)]
    out = run(
        [alloc],
        [job],
        sched=[sched_job("a1")],
        files=files,
        now=T0 + timedelta(seconds=10),
        daemon_started_at=T0,
    )
    assert "a1" not in out.allocations and "j1" not in out.jobs
    # A worker that really stopped is still caught, stale_after_s after the start.
    out = run(
        [alloc],
        [job],
        sched=[sched_job("a1")],
        files=files,
        now=T0 + timedelta(seconds=61),
        daemon_started_at=T0,
    )
    assert out.allocations["a1"].stop_requested_at is not None
    assert out.jobs["j1"].state is JobState.QUEUED


def test_cluster_preference_holds_across_clusters() -> None:
    c1, c2 = make_profile("c1"), make_profile("c2")
    job = make_job("j1", preferred=["c2"])
    here = make_alloc("a1", state=R, scheduler_id="100", started_at=T0, last_seq=1)
    there = make_alloc(
        "b1", cluster="c2", state=R, scheduler_id="200", started_at=T0, last_seq=4,
        seq_changed_at=T0,
    )  # fmt: skip
    idle_here = AllocationFiles(
        allocation_id="a1", heartbeat=Heartbeat(allocation_id="a1", seq=1, state=WorkerState.IDLE)
    )

    def cycle(others: list) -> object:
        return decide_cycle(
            DecideInput(
                now=T0 + timedelta(seconds=5),
                profile=c1,
                profiles={"c1": c1, "c2": c2},
                settings=DaemonSettings(stale_after_s=60),
                mode=ClusterMode.OPEN,
                usable_clusters={"c1", "c2"},
                snapshot=ClusterSnapshot(
                    cluster="c1",
                    query_ok=True,
                    scheduler_jobs={"a1": sched_job("a1")},
                    files={"a1": idle_here},
                ),
                allocations=[here],
                all_live=[here, *others],
                jobs={"j1": job},
            ),
            new_id,
        )

    # c2 has an idle worker: c1 leaves the job to it.
    assert cycle([there]).bound == []
    # c2's worker went quiet (stale): c1 takes the job rather than let it wait.
    quiet = there.model_copy(update={"seq_changed_at": T0 - timedelta(seconds=300)})
    assert cycle([quiet]).bound == ["j1"]


def test_idle_worker_too_close_to_its_deadline_gets_no_job() -> None:
    job = make_job("j1")
    idle = make_alloc("a2", state=R, scheduler_id="101", started_at=T0)
    settings = DaemonSettings(stale_after_s=60, stop_grace_s=30, min_segment_s=120)

    def files(left_s: float) -> list[AllocationFiles]:
        beat = Heartbeat(
            allocation_id="a2",
            seq=1,
            state=WorkerState.IDLE,
            deadline=T0 + timedelta(seconds=left_s),
            handoff_margin_s=30,
        )
        return [AllocationFiles(allocation_id="a2", heartbeat=beat)]

    # 140 s to the deadline - 30 s margin = 110 s of segment: not worth staging the job.
    late = run(
        [idle], [job], sched=[sched_job("a2", sid="101")], files=files(140), settings=settings
    )
    assert late.bound == [] and late.jobs.get("j1") is None
    # 160 s - 30 s = 130 s: bound.
    ok = run([idle], [job], sched=[sched_job("a2", sid="101")], files=files(160), settings=settings)
    assert ok.bound == ["j1"] and ok.jobs["j1"].allocation_id == "a2"


def test_sigkilled_worker_spends_a_retry_only_when_deaths_recur_without_progress() -> None:
    # Epoch 2 wrote a checkpoint (running_pair's pointer is 2-1): a SIGKILL is resumable.
    job, alloc = running_pair()
    job = job.model_copy(update={"losses_without_progress": 1})
    killed = [sched_job("a1", "ended", "FAILED")]
    out = run([alloc], [job], sched=killed, files=[AllocationFiles(allocation_id="a1")])
    j = out.jobs["j1"]
    assert (j.state, j.retries, j.losses_without_progress) == (JobState.QUEUED, 0, 0)
    # Epoch 3 died before its first checkpoint: free once, a retry when it happens again.
    stalled = job.model_copy(update={"epoch": 3, "losses_without_progress": 0})
    out = run([alloc], [stalled], sched=killed, files=[AllocationFiles(allocation_id="a1")])
    j = out.jobs["j1"]
    assert (j.retries, j.losses_without_progress) == (0, 1)
    out = run(
        [alloc],
        [j.model_copy(update={"state": JobState.RUNNING, "allocation_id": "a1", "epoch": 4})],
        sched=killed,
        files=[AllocationFiles(allocation_id="a1")],
    )
    j = out.jobs["j1"]
    assert (j.state, j.retries, j.losses_without_progress) == (JobState.QUEUED, 1, 2)


def test_every_job_change_of_the_cycle_follows_the_job_state_machine() -> None:
    done = make_job("j1", state=JobState.COMPLETED, epoch=2, step=100)
    running, alloc = running_pair()
    cycle = Cycle(decide_input([alloc], [done.model_copy(update={"id": "j0"}), running]))
    with pytest.raises(JobTransitionError, match="job j0: the daemon cannot move it"):
        cycle.put_job(done.model_copy(update={"id": "j0", "state": JobState.QUEUED}))
    with pytest.raises(JobTransitionError, match="from running to held"):
        cycle.put_job(running.model_copy(update={"state": JobState.HELD}))
    assert cycle.out.jobs == {}  # nothing refused was recorded
    cycle.put_job(running.model_copy(update={"ns_per_day": 12.5}))  # no state change
    cycle.put_job(running.model_copy(update={"state": JobState.QUEUED, "allocation_id": None}))
    assert cycle.out.jobs["j1"].state is JobState.QUEUED
