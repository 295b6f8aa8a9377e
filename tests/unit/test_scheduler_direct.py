"""DirectScheduler through LocalTransport with real detached processes and real signals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relaymd.mailbox.layout import alloc_dir
from relaymd.models import Allocation, ClusterProfile
from relaymd.scheduler import DirectScheduler, EndState, SchedulerJob, SchedulerPhase
from relaymd.transport import LocalTransport

BOUND_S = 30.0  # a bound, not a timing: a stuck process fails the test


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session (`timeout` puts the job in its own group)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)


def profile_for(tmp_path: Path, native: list[str], max_workers: int = 2) -> ClusterProfile:
    return ClusterProfile.model_validate(
        {
            "name": "local",
            "transport": "local",
            "scheduler": "direct",
            "scratch": str(tmp_path / "scratch"),
            "partitions": [{"name": "local", "walltime_minutes": 1, "gpus_per_allocation": 0}],
            "native_worker": native,
            "max_workers": max_workers,
            "command_timeout_s": 20,
        }
    )


class Harness:
    def __init__(self, profile: ClusterProfile) -> None:
        self.profile = profile
        self.scheduler = DirectScheduler(profile)
        self.transport = LocalTransport(profile)
        self.submitted: dict[str, str] = {}

    def write_job(self, alloc: Allocation) -> Path:
        """What the daemon's write does before submitting: the 0700 folder and job.sh."""
        folder = Path(alloc_dir(self.profile.scratch, alloc.id))
        folder.mkdir(parents=True, mode=0o700)
        script = self.scheduler.render_job_script(alloc, self.profile, ["--alloc-dir", str(folder)])
        (folder / "job.sh").write_text(script)
        return folder

    async def submit(self, alloc_id: str, walltime_s: int = 60) -> str:
        alloc = Allocation(
            id=alloc_id, cluster="local", partition="local", image="openmm", walltime_s=walltime_s
        )
        folder = self.write_job(alloc)
        result = await self.transport.run(self.scheduler.submit_snippet(alloc, f"{folder}/job.sh"))
        [sub] = self.scheduler.parse_submit(result.stdout)
        assert sub.error is None and sub.scheduler_id, result
        self.submitted[alloc_id] = sub.scheduler_id
        return sub.scheduler_id

    async def query(self) -> dict[str, SchedulerJob]:
        snippet = self.scheduler.query_snippet(self.profile, list(self.submitted.values()))
        result = await self.transport.run(snippet)
        assert result.exit_status == 0, result
        return {j.allocation_id: j for j in self.scheduler.parse_query(result.stdout)}

    async def wait_for(self, alloc_id: str, phase: SchedulerPhase) -> SchedulerJob:
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            jobs = await self.query()
            job = jobs.get(alloc_id)
            if job is not None and job.phase is phase:
                return job
            await asyncio.sleep(0.1)
        raise AssertionError(f"{alloc_id} never reached {phase}")

    async def cancel(self, *alloc_ids: str) -> None:
        ids = [self.submitted[a] for a in alloc_ids]
        result = await self.transport.run(self.scheduler.cancel_snippet(ids))
        assert result.exit_status == 0, result


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    # The worker: records its args and sleeps until told to stop via a file or a signal.
    h = Harness(profile_for(tmp_path, ["bash", "-c", 'echo "args $*"; sleep 300', "worker"]))
    yield h
    if h.submitted:  # never leave processes behind
        await h.transport.run(h.scheduler.cancel_snippet(list(h.submitted.values())))


async def test_submit_run_cancel(harness: Harness) -> None:
    pid = await harness.submit("a1")
    job = await harness.wait_for("a1", SchedulerPhase.RUNNING)
    assert job.scheduler_id == pid and job.node
    folder = Path(alloc_dir(harness.profile.scratch, "a1"))
    # Detached: its own session, so the daemon (or its terminal) going away does not kill it.
    assert os.getsid(int(pid)) == int(pid)
    await harness.cancel("a1")
    ended = await harness.wait_for("a1", SchedulerPhase.ENDED)
    assert ended.end_state is EndState.CANCELLED
    assert ended.exit_code == "143"  # the worker died of SIGTERM (128 + 15)
    assert f"args --alloc-dir {folder}" in (folder / "direct.out").read_text()


async def test_completed_and_failed_exit_codes(tmp_path: Path) -> None:
    ok = Harness(profile_for(tmp_path / "ok", ["bash", "-c", "exit 0", "w"]))
    bad = Harness(profile_for(tmp_path / "bad", ["bash", "-c", "exit 3", "w"]))
    await ok.submit("a2")
    await bad.submit("a3")
    done = await ok.wait_for("a2", SchedulerPhase.ENDED)
    failed = await bad.wait_for("a3", SchedulerPhase.ENDED)
    assert (done.end_state, done.exit_code) == (EndState.COMPLETED, "0")
    assert (failed.end_state, failed.exit_code) == (EndState.FAILED, "3")


async def test_walltime_ends_timeout(tmp_path: Path) -> None:
    h = Harness(profile_for(tmp_path, ["bash", "-c", "sleep 300", "w"]))
    await h.submit("a4", walltime_s=1)
    job = await h.wait_for("a4", SchedulerPhase.ENDED)
    assert job.end_state is EndState.TIMEOUT
    assert job.exit_code == "124"


async def test_max_workers_keeps_the_rest_pending(tmp_path: Path) -> None:
    h = Harness(profile_for(tmp_path, ["bash", "-c", "sleep 300", "w"], max_workers=1))
    try:
        await h.submit("a5")
        await h.wait_for("a5", SchedulerPhase.RUNNING)
        await h.submit("a6")
        jobs = await h.query()
        assert jobs["a6"].phase is SchedulerPhase.PENDING
        await h.cancel("a5")
        await h.wait_for("a5", SchedulerPhase.ENDED)
        # The slot freed: the pending one starts.
        await h.wait_for("a6", SchedulerPhase.RUNNING)
        # A pending one can be cancelled too.
        await h.submit("a7")
        assert (await h.query())["a7"].phase is SchedulerPhase.PENDING
        await h.cancel("a7")
        assert (await h.wait_for("a7", SchedulerPhase.ENDED)).end_state is EndState.CANCELLED
    finally:
        await h.transport.run(h.scheduler.cancel_snippet(list(h.submitted.values())))


async def test_ended_allocations_only_reported_when_asked(harness: Harness) -> None:
    await harness.submit("a8")
    await harness.wait_for("a8", SchedulerPhase.RUNNING)
    await harness.cancel("a8")
    await harness.wait_for("a8", SchedulerPhase.ENDED)
    result = await harness.transport.run(harness.scheduler.query_snippet(harness.profile, []))
    assert "a8" not in {j.allocation_id for j in harness.scheduler.parse_query(result.stdout)}


async def test_vanished_process_is_unknown_not_completed(harness: Harness) -> None:
    pid = await harness.submit("a9")
    await harness.wait_for("a9", SchedulerPhase.RUNNING)
    kill_session(int(pid))  # wrapper and job die without writing an exit status
    job = await harness.wait_for("a9", SchedulerPhase.ENDED)
    assert job.end_state is EndState.UNKNOWN
    assert job.reason and "vanished" in job.reason


def test_cancel_snippet_never_signals_a_foreign_pid() -> None:
    profile = profile_for(Path("/nonexistent"), ["true"])
    snippet = DirectScheduler(profile).cancel_snippet([str(os.getpid())])
    assert 'grep -q " relaymd-"' in snippet
