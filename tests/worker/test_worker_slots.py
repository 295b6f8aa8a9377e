"""`relaymd-worker slots` (ADR 0026): a real supervisor with real worker children, each pinned to
its slot's device; one slot killed alone (its engine with it), signals forwarded to all."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from relaymd.mailbox.files import atomic_write_model
from relaymd.mailbox.layout import CONTROL_FILE
from relaymd.mailbox.models import Control, ControlAction, EventKind, WorkerEvent
from relaymd.models import StorageAccess
from tests.worker.atom_like import engine, write_bundle
from tests.worker.worker_harness import REPO, Allocation, Relay, wait_for, worker_env

DEVICES = ["4", "5", "6"]


def proc_env(pid: int) -> dict[str, str]:
    """A live process's environment, read by the kernel (not by the code under test)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def start_slots(
    slots: list[Allocation], env: dict[str, str], idle_timeout: float = 300.0
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "worker_entry", "slots"]
    for slot in slots:
        args += ["--slot-dir", str(slot.dir)]
    args += [
        "--alloc-dir", str(slots[0].dir),  # as the job script passes it: each slot gets its own
        "--heartbeat-interval", "0.2",
        "--idle-timeout", str(idle_timeout),
        "--margin-min", "0.5",
        "--margin-max", "2",
        "--platform", "Reference",
    ]  # fmt: skip
    environment = worker_env()
    environment.update(env)
    return subprocess.Popen(args, cwd=REPO, env=environment, stderr=subprocess.PIPE)


def slot_exits(slot: Allocation) -> list[WorkerEvent]:
    return [e for e in slot.events() if e.kind is EventKind.SLOT_EXITED]


def worker_pids(slots: list[Allocation]) -> list[int]:
    def beating() -> list[int] | None:
        beats = [slot.heartbeat() for slot in slots]
        return [b.pid for b in beats if b is not None] if all(beats) else None

    pids = wait_for(beating, 60, "a heartbeat from every slot")
    assert isinstance(pids, list)
    return pids


def test_kill_one_slot_stops_its_worker_and_engine_while_the_others_run_on(
    tmp_path: Path, file_access: StorageAccess
) -> None:
    relay = Relay(tmp_path, file_access, "job-slot")
    relay.upload_bundle(write_bundle(tmp_path / "bundle", 500, chunk_s=0.05))
    slots = [Allocation(tmp_path, f"grp-g{i}", file_access) for i in range(3)]
    slots[1].assign(relay.assignment(slots[1], engine(500)))
    paused = tmp_path / "engine.pid"
    env = {
        "CUDA_VISIBLE_DEVICES": ",".join(DEVICES),
        "FAKE_ATOM_PAUSE": "line:1",  # the engine stops after its first sample, pid in file
        "FAKE_ATOM_PAUSE_FILE": str(paused),
    }
    supervisor = start_slots(slots, env)
    try:
        pids = worker_pids(slots)
        for i, pid in enumerate(pids):
            seen = proc_env(pid)
            assert seen["CUDA_VISIBLE_DEVICES"] == DEVICES[i]
            assert seen["RELAYMD_ALLOCATION_DEVICES"] == ",".join(DEVICES)
        wait_for(paused.is_file, 60, "slot 1's engine to run")
        engine_pid = int(paused.read_text())
        assert proc_env(engine_pid)["CUDA_VISIBLE_DEVICES"] == "5"
        started = slots[1].wait_event({EventKind.STARTED})
        assert started.cuda_visible_devices == "5"

        atomic_write_model(
            slots[1].dir / CONTROL_FILE, Control(action=ControlAction.KILL, reason="hung")
        )
        wait_for(lambda: slot_exits(slots[1]), 60, "slot 1's slot_exited event")
        [exited] = slot_exits(slots[1])
        assert exited.exit_code == -signal.SIGKILL and exited.reason == "hung"
        assert gone(pids[1]) and gone(engine_pid)
        # The other slots run on: their workers live and keep beating.
        beats = [slots[i].heartbeat() for i in (0, 2)]
        wait_for(
            lambda: all(
                (hb := slots[i].heartbeat()) is not None and hb.seq > b.seq + 3
                for i, b in zip((0, 2), beats, strict=True)
                if b is not None
            ),
            60,
            "slots 0 and 2 to keep beating",
        )
        assert not gone(pids[0]) and not gone(pids[2]) and supervisor.poll() is None
        assert not slot_exits(slots[0]) and not slot_exits(slots[2])

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    for i in (0, 2):
        [exited] = slot_exits(slots[i])
        assert exited.exit_code == 0
        idle = [e for e in slots[i].events() if e.kind is EventKind.IDLE_EXIT]
        assert idle and idle[0].reason == "signal received while idle"
    assert len(slot_exits(slots[1])) == 1


def test_a_worker_killed_from_outside_is_reported_and_its_engine_ended(
    tmp_path: Path, file_access: StorageAccess
) -> None:
    relay = Relay(tmp_path, file_access, "job-ext")
    relay.upload_bundle(write_bundle(tmp_path / "bundle", 500, chunk_s=0.05))
    slots = [Allocation(tmp_path, f"ext-g{i}", file_access) for i in range(2)]
    slots[0].assign(relay.assignment(slots[0], engine(500)))
    paused = tmp_path / "engine.pid"
    env = {"FAKE_ATOM_PAUSE": "line:1", "FAKE_ATOM_PAUSE_FILE": str(paused)}
    # Slot 1 idles out on its own later (not so soon that it is gone before its environment
    # is read below on a loaded machine).
    supervisor = start_slots(slots, env, idle_timeout=10.0)
    try:
        pids = worker_pids(slots)
        # No devices from SLURM: slot i gets device i.
        assert [proc_env(pid)["CUDA_VISIBLE_DEVICES"] for pid in pids] == ["0", "1"]
        wait_for(paused.is_file, 60, "slot 0's engine to run")
        engine_pid = int(paused.read_text())
        subprocess.run(["kill", "-9", str(pids[0])], check=True)
        wait_for(lambda: slot_exits(slots[0]), 60, "slot 0's slot_exited event")
        assert slot_exits(slots[0])[0].exit_code == -signal.SIGKILL
        wait_for(lambda: gone(engine_pid), 30, "the orphaned engine to be killed")
        # Slot 1 idles out on its own; then the supervisor exits.
        assert supervisor.wait(60) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert slot_exits(slots[1])[0].exit_code == 0


def test_sigusr1_and_sigint_reach_every_slot(tmp_path: Path, file_access: StorageAccess) -> None:
    for sig in (signal.SIGUSR1, signal.SIGINT):
        slots = [Allocation(tmp_path / sig.name, f"sig-g{i}", file_access) for i in range(2)]
        supervisor = start_slots(slots, {"CUDA_VISIBLE_DEVICES": "2,3"})
        try:
            worker_pids(slots)
            supervisor.send_signal(sig)
            assert supervisor.wait(60) == 0
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
        for slot in slots:
            # Without a deadline the walltime warning is all there is: the worker leaves.
            idle = [e for e in slot.events() if e.kind is EventKind.IDLE_EXIT]
            assert idle and idle[0].reason == "signal received while idle", slot.log()
            assert slot_exits(slot)[0].exit_code == 0


def test_more_slots_than_devices_is_refused_with_a_message(tmp_path: Path) -> None:
    folders = [tmp_path / "g0", tmp_path / "g1"]
    for folder in folders:
        folder.mkdir()
    environment = worker_env()
    environment["CUDA_VISIBLE_DEVICES"] = "3"
    done = subprocess.run(
        [sys.executable, "-m", "worker_entry", "slots"]
        + [a for f in folders for a in ("--slot-dir", str(f))],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "2 slot folders but CUDA_VISIBLE_DEVICES='3' names 1 devices" in done.stderr
    assert "Traceback" not in done.stderr


def test_slot_arguments_and_devices() -> None:
    from worker_entry.slots import SlotsError, allocation_devices, worker_arguments

    args = ["--alloc-dir", "/x/g0", "--idle-timeout", "5", "--alloc-dir=/y"]
    assert worker_arguments(args) == ["--idle-timeout", "5"]
    with pytest.raises(SlotsError, match="not --mailbox"):
        worker_arguments(["--mailbox", "s3://b/p/mailbox/a1"])
    assert allocation_devices(2, {}) == ["0", "1"]
    assert allocation_devices(2, {"CUDA_VISIBLE_DEVICES": "GPU-a, GPU-b,GPU-c"}) == [
        "GPU-a",
        "GPU-b",
    ]


def test_a_missing_slot_folder_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker_entry", "slots", "--slot-dir", str(tmp_path / "nope")],
        cwd=REPO,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "is not a directory" in done.stderr, done.stderr
