"""The chaos campaign's fault targeting (bench/chaos_faults.py): a worker just SIGKILLed (its
pid still present, a zombie until reaped, its heartbeat fresh) must not be the target of the
next fault."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

from bench.chaos_faults import ChaosWorld, _alive, running_workers
from relaymd.mailbox.models import Heartbeat, WorkerState


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def _world(tmp_path: Path, daemon: subprocess.Popen[bytes] | None = None) -> ChaosWorld:
    tb = SimpleNamespace(clusters=[SimpleNamespace(name="c", scratch=str(tmp_path / "scratch"))])
    return ChaosWorld(
        tb=tb,  # type: ignore[arg-type]
        run="run1",
        root=tmp_path,
        config=tmp_path / "config.yaml",
        daemon=daemon,  # type: ignore[arg-type]
        bucket=None,
        bucket_name="b",
        key_prefix="relay/",
        total_steps={"j1": 100},
        command_jobs=set(),
    )


def test_a_fault_waits_for_its_target_until_none_can_come(tmp_path: Path) -> None:
    """No fixed bound: a target that takes many polls to appear is still found; the wait ends
    empty once every job has ended, or at the campaign's deadline."""
    world = _world(tmp_path)
    looks: list[int] = []

    def late() -> list[str]:
        looks.append(1)
        return ["w1"] if len(looks) > 5 else []

    assert world.wait_for_target(late, every_s=0.01) == ["w1"]
    world.all_final = lambda: len(looks) > 8
    assert world.wait_for_target(lambda: late() and [], every_s=0.01) == []
    assert world.no_target("running worker") == "no running worker: every job had ended"
    world.all_final, world.deadline = (lambda: False), time.monotonic()
    assert world.wait_for_target(lambda: [], every_s=0.01) == []
    assert world.no_target("running worker").endswith("the campaign's deadline passed")


def test_a_killed_unreaped_process_is_not_alive() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert _alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        # Not reaped yet: the pid still exists (kill(pid, 0) succeeds) as a zombie.
        while _state(child.pid) != "Z":
            time.sleep(0.01)
        os.kill(child.pid, 0)
        assert not _alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not _alive(child.pid)


def test_a_worker_the_campaign_killed_is_no_target_while_its_heartbeat_is_fresh(
    tmp_path: Path,
) -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        folder = tmp_path / "scratch" / "run1" / "alloc" / "a1"
        folder.mkdir(parents=True)
        beat = Heartbeat(
            allocation_id="a1", seq=3, state=WorkerState.RUNNING, job_id="j1", pid=child.pid
        )
        (folder / "heartbeat.json").write_text(beat.model_dump_json())
        world = _world(tmp_path, child)
        assert [w.allocation_id for w in running_workers(world)] == ["a1"]
        # What kill_worker records before its SIGKILL; the process is left running here, as
        # it may still be when the next fault looks (the kernel has not ended it yet).
        world.killed.add(child.pid)
        assert running_workers(world) == []
        world.kill_worker(child.pid)
        assert child.wait() == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
