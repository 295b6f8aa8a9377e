"""Invariant 6: a cycle costs at most two round trips per cluster, for 1 or 50 workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaymd.daemon.runner import ClusterRunner
from relaymd.mailbox.models import Heartbeat, WorkerState
from relaymd.models import Allocation, AllocationState, JobState
from tests.daemon.daemon_factories import make_job
from tests.support.fake_cluster import BashTransport, local_profile, make_fake_runners


async def make_runner(tmp_path: Path, n: int) -> tuple[ClusterRunner, object, BashTransport]:
    scratch = tmp_path / "scratch"
    profile = local_profile("c1", scratch, walltime_minutes=5, max_pending=3, max_running=200)
    fake = await make_fake_runners(tmp_path, {"c1": profile})
    store, runner, transport = fake.store, fake.runners["c1"], fake.transports["c1"]
    lines = []
    for i in range(n):
        alloc_id = f"a{i:04d}"
        folder = scratch / "alloc" / alloc_id
        folder.mkdir(parents=True)
        beat = Heartbeat(allocation_id=alloc_id, seq=1, state=WorkerState.IDLE)
        (folder / "heartbeat.json").write_text(beat.model_dump_json())
        await store.insert_allocation(
            Allocation(
                id=alloc_id,
                cluster="c1",
                partition="p1",
                image="openmm",
                state=AllocationState.RUNNING,
                scheduler_id=str(100 + i),
                walltime_s=300,
            )
        )
        lines.append(f"{alloc_id} {100 + i} running\n")
        await store.insert_job(make_job(f"j{i:04d}", created_s=i))
    (scratch / "queue").write_text("".join(lines))
    return runner, store, transport


@pytest.mark.parametrize("n", [1, 50])
async def test_at_most_two_round_trips_per_cycle(tmp_path: Path, n: int) -> None:
    runner, store, transport = await make_runner(tmp_path, n)
    try:
        # Cycle 1: one read, one write carrying every assignment.
        report = await runner.cycle()
        assert report.ok, report.error
        assert report.round_trips == 2 == len(transport.scripts)
        assigned = [j for j in await store.list_jobs() if j.state is JobState.ASSIGNED]
        assert len(assigned) == n
        folders = sorted((tmp_path / "scratch" / "alloc").glob("*/assignment.json"))
        assert len(folders) == n
        # Cycle 2: the workers have not picked up yet: the assignments are rewritten, still 2.
        report = await runner.cycle()
        assert report.round_trips == 2
        # The workers take their assignments: a quiet cycle is a single read.
        for job in assigned:
            folder = tmp_path / "scratch" / "alloc" / job.allocation_id
            beat = Heartbeat(
                allocation_id=job.allocation_id,
                seq=2,
                state=WorkerState.RUNNING,
                job_id=job.id,
                epoch=job.epoch,
            )
            (folder / "heartbeat.json").write_text(beat.model_dump_json())
        report = await runner.cycle()
        assert report.round_trips == 1
        assert all(j.state is JobState.RUNNING for j in await store.list_jobs())
    finally:
        await store.close()


async def test_submissions_and_cancels_share_the_one_write(tmp_path: Path) -> None:
    runner, store, _transport = await make_runner(tmp_path, 0)
    try:
        for i in range(5):
            await store.insert_job(make_job(f"q{i}", created_s=i))
        report = await runner.cycle()
        assert report.round_trips == 2
        allocs = await store.list_allocations()
        assert len(allocs) == 3  # max_pending
        assert all(a.state is AllocationState.PENDING and a.scheduler_id for a in allocs)
        for alloc in allocs:
            folder = tmp_path / "scratch" / "alloc" / alloc.id
            assert (folder / "job.sh").is_file() and (folder / "credentials").is_file()
            assert (folder / "credentials").stat().st_mode & 0o777 == 0o600
            assert "credentials" not in (folder / "job.sh").read_text()
        # Jobs cancelled: the pending allocations are surplus and cancelled in one write.
        for job in await store.list_jobs():
            await store.update_job(job.model_copy(update={"state": JobState.CANCELLED}))
        report = await runner.cycle()
        assert report.round_trips == 2
        assert (tmp_path / "scratch" / "queue").read_text().strip() == ""
    finally:
        await store.close()


async def test_unsafe_profile_value_stops_submissions_not_the_daemon(tmp_path: Path) -> None:
    from relaymd.scheduler import SlurmScheduler

    runner, store, transport = await make_runner(tmp_path, 0)
    try:
        bad = runner.profile.model_copy(
            update={
                "partitions": [
                    runner.profile.partitions[0].model_copy(
                        update={"account": "x; touch /tmp/relaymd-pwned"}
                    )
                ]
            }
        )
        real = SlurmScheduler(bad)
        fake = runner.scheduler
        fake.render_job_script = real.render_job_script  # the real template and its checks
        evil = ClusterRunner(
            runner.ctx, bad, transport_factory=lambda *a, **k: transport, scheduler=fake
        )
        assert evil.config_error is not None and "account" in evil.config_error
        await store.insert_job(make_job("q1"))
        report = await evil.cycle()
        assert report.ok and report.round_trips == 1  # read only: nothing to submit
        assert await store.list_allocations() == []
        status = await store.get_cluster_status("c1")
        assert status is not None and "account" in (status.last_error or "")
    finally:
        await store.close()


async def test_unreachable_or_auth_failure_marks_the_cluster_not_the_jobs(tmp_path: Path) -> None:
    from relaymd.models.state import ClusterReachability
    from relaymd.transport import HostUnreachable, NeedsAuth

    runner, store, transport = await make_runner(tmp_path, 2)
    try:
        for error, expected in (
            (HostUnreachable("login node down"), ClusterReachability.UNREACHABLE),
            (NeedsAuth("2FA prompt"), ClusterReachability.NEEDS_AUTH),
        ):

            async def broken(script: str, *, timeout: float | None = None, error=error) -> None:  # noqa: ASYNC109
                raise error

            transport.run = broken
            report = await runner.cycle()
            assert not report.ok
            status = await store.get_cluster_status("c1")
            assert status is not None and status.reachability is expected
            assert all(j.state is JobState.QUEUED for j in await store.list_jobs())
            assert all(a.state is AllocationState.RUNNING for a in await store.list_allocations())
    finally:
        await store.close()


def test_a_repeated_poll_failure_is_logged_on_change_then_every_ten_minutes() -> None:
    from relaymd.daemon.poll_outcome import RepeatedWarning, failure_reachability
    from relaymd.models.state import ClusterReachability
    from relaymd.transport import HostKeyChanged, HostKeyRejected, NeedsAuth

    assert failure_reachability(HostKeyChanged("x")) is ClusterReachability.HOST_KEY_CHANGED
    assert failure_reachability(HostKeyRejected("x")) is ClusterReachability.NEEDS_AUTH
    assert failure_reachability(NeedsAuth("x")) is ClusterReachability.NEEDS_AUTH
    warn = RepeatedWarning(every_s=600)
    polls = [warn.due("host-key-changed", t) for t in range(0, 1300, 30)]
    assert [t for t, due in zip(range(0, 1300, 30), polls, strict=True) if due] == [0, 600, 1200]
    assert warn.due("unreachable", 1210)  # a different failure is logged at once
    warn.reset()
    assert warn.due("unreachable", 1220)  # after a good poll, the next failure is news


async def test_history_times_come_from_the_worker_events_read_after_an_outage(
    tmp_path: Path,
) -> None:
    """A segment started and handed off while the daemon was offline: its history shows the
    worker's times (25 s), not when the daemon came back; a worker clock ahead of the daemon's
    is clamped to the cycle that read the event."""
    from datetime import timedelta

    from relaymd.cli.cmd_jobs import segment_times
    from relaymd.mailbox.models import EventKind, WorkerEvent
    from relaymd.models import Segment, utcnow

    runner, store, _ = await make_runner(tmp_path, 1)
    try:
        assigned = utcnow() - timedelta(minutes=10)
        job = await store.get_job("j0000")
        job = await store.update_job(
            job.model_copy(update={"state": JobState.RUNNING, "epoch": 1, "allocation_id": "a0000"})
        )
        [alloc] = await store.list_allocations()
        await store.update_allocation(alloc.model_copy(update={"job_id": "j0000"}))
        await store.insert_segment(
            Segment(
                job_id="j0000",
                epoch=1,
                allocation_id="a0000",
                cluster="c1",
                started_at=assigned,
            )
        )
        folder = tmp_path / "scratch" / "alloc" / "a0000"
        beat = Heartbeat(allocation_id="a0000", seq=9, state=WorkerState.IDLE, written_at=assigned)
        (folder / "heartbeat.json").write_text(beat.model_dump_json())
        first_md = assigned + timedelta(seconds=40)
        events = [
            WorkerEvent(
                kind=EventKind.STARTED, allocation_id="a0000", job_id="j0000", epoch=1, at=first_md
            ),
            WorkerEvent(
                kind=EventKind.HANDOFF,
                allocation_id="a0000",
                job_id="j0000",
                epoch=1,
                at=first_md + timedelta(seconds=25),
            ),
        ]
        (folder / "events.jsonl").write_text("".join(e.model_dump_json() + "\n" for e in events))
        before = utcnow()
        assert (await runner.cycle()).ok
        [segment] = await store.list_segments("j0000")
        assert segment.outcome.value == "handoff"
        assert segment.ended_at is not None and segment.ended_at >= before  # the daemon's
        start, end, source = segment_times(segment)
        assert (start, source) == (first_md, "worker")
        assert end is not None and (end - start).total_seconds() == 25

        # A worker clock ahead of the daemon's: its times cannot pass the cycle that read them,
        # nor precede the assignment.
        noticed = utcnow()
        skewed = await store.record_segment_times(
            "j0000",
            1,
            noticed,
            worker_started_at=assigned - timedelta(minutes=5),
            worker_ended_at=noticed + timedelta(minutes=5),
        )
        assert (skewed.worker_started_at, skewed.worker_ended_at) == (assigned, noticed)
    finally:
        await store.close()
