"""A slot's worker (ADR 0026): `hold`, an assignment's GPU slots mapped to the engine's
CUDA_VISIBLE_DEVICES with AToM's nodefile, and nvidia-smi filtered to the worker's devices."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from relaymd.atom_config import read_atom_keys, set_atom_key
from relaymd.mailbox.layout import CONTROL_FILE
from relaymd.mailbox.models import ControlAction, EventKind, WorkerState
from relaymd.models import OpenMMSettings, StorageAccess
from relaymd.storage.keys import outputs_prefix
from tests.worker.atom_like import engine, write_bundle
from tests.worker.worker_harness import REPO, TERMINAL, Relay, wait_for, worker_env
from worker_entry.devices import DeviceError, engine_devices
from worker_entry.engines import make_engine
from worker_entry.engines.base import EngineFailure
from worker_entry.heartbeat import query_gpus

SLOT_ENV = {"CUDA_VISIBLE_DEVICES": "5", "RELAYMD_ALLOCATION_DEVICES": "4,5,6,7"}


def test_held_worker_takes_no_job_and_never_idles_out_until_released(
    tmp_path: Path, file_access: StorageAccess
) -> None:
    relay = Relay(tmp_path, file_access, "job-held")
    relay.upload_bundle(write_bundle(tmp_path / "bundle", 2))
    alloc = relay.allocation()
    alloc.control(ControlAction.HOLD, None, None)
    alloc.start(idle_timeout=1.0)

    def held_beat() -> int | None:
        hb = alloc.heartbeat()
        return hb.seq if hb is not None and hb.state is WorkerState.HELD else None

    first = wait_for(held_beat, 60, "a `held` heartbeat")
    assert isinstance(first, int)
    alloc.assign(relay.assignment(alloc, engine(2)))
    # 25 more beats at 0.2 s: held five times longer than the idle timeout, job untouched.
    wait_for(lambda: (held_beat() or 0) > first + 25, 60, "25 more held heartbeats")
    assert alloc.proc is not None and alloc.proc.poll() is None
    assert not alloc.events()
    hb = alloc.heartbeat()
    assert hb is not None and hb.job_id is None
    (alloc.dir / CONTROL_FILE).unlink()
    assert alloc.wait_event({EventKind.COMPLETED}).epoch == relay.epoch
    assert alloc.wait_exit(60) == 0


@pytest.mark.parametrize("how", ["stop", "sigterm"])
def test_held_worker_still_obeys_stop_and_signals(
    tmp_path: Path, file_access: StorageAccess, how: str
) -> None:
    relay = Relay(tmp_path, file_access, "job-held-stop")
    alloc = relay.allocation()
    alloc.control(ControlAction.HOLD, None, None)
    alloc.start(idle_timeout=300.0)
    wait_for(
        lambda: (hb := alloc.heartbeat()) is not None and hb.state is WorkerState.HELD,
        60,
        "a `held` heartbeat",
    )
    if how == "stop":
        alloc.control(ControlAction.STOP, None, None)
    else:
        alloc.kill(signal.SIGTERM)
    end = alloc.wait_event({EventKind.IDLE_EXIT})
    assert end.reason == (
        "stop requested in control.json" if how == "stop" else "signal received while idle"
    )
    assert alloc.wait_exit(60) == 0


def test_lead_slot_runs_atom_on_its_slots_devices_through_a_nodefile(
    tmp_path: Path, file_access: StorageAccess, monkeypatch: pytest.MonkeyPatch
) -> None:
    relay = Relay(tmp_path, file_access, "job-2gpu")
    relay.upload_bundle(write_bundle(tmp_path / "bundle", 200, chunk_s=0.02))
    alloc = relay.allocation()
    alloc.assign(relay.assignment(alloc, engine(200), devices=[1, 2]))
    paused = tmp_path / "engine.pid"
    env = dict(SLOT_ENV, FAKE_ATOM_PAUSE="line:4", FAKE_ATOM_PAUSE_FILE=str(paused))
    env["FAKE_ATOM_EXIT_SLEEP_S"] = "0.1"
    alloc.start(idle_timeout=1.0, env=env)
    started = alloc.wait_event({EventKind.STARTED})
    assert started.cuda_visible_devices == "5,6"
    wait_for(paused.is_file, 60, "the engine to sample")
    engine_environ = Path(f"/proc/{int(paused.read_text())}/environ").read_bytes()
    assert b"CUDA_VISIBLE_DEVICES=5,6" in engine_environ.split(b"\0")
    hb = alloc.heartbeat()
    assert hb is not None and hb.cuda_visible_devices == "5,6" and hb.job_id == relay.job_id
    alloc.control(ControlAction.STOP, relay.job_id, relay.epoch)
    assert alloc.wait_event(TERMINAL).kind is EventKind.STOPPED
    assert alloc.wait_exit(60) == 0
    # AToM's stand-in started one worker per nodefile line, on the devices the slots map to.
    log = relay.store.get_bytes(outputs_prefix(relay.job_id, relay.epoch) + "relaymd-command.log")
    # (The harness runs workers with --platform Reference: the nodefile's arch follows it.)
    assert b"worker localhost:0:0 (Reference) on device 5" in log
    assert b"worker localhost:0:1 (Reference) on device 6" in log
    assert b"cannot create a context" not in log


def test_atom_stand_in_runs_one_worker_per_usable_nodefile_device(tmp_path: Path) -> None:
    """As AToM: a CUDA index past CUDA_VISIBLE_DEVICES gets no context; none left: quits 0."""
    folder = write_bundle(tmp_path / "run", 1)
    (folder / "atom.cntl").write_text((folder / "atom.cntl").read_text() + "NODEFILE = nodes\n")
    env = dict(worker_env(), CUDA_VISIBLE_DEVICES="5,6")
    command = [sys.executable, "fake_atom.py", "atom.cntl"]
    (folder / "nodes").write_text("localhost,0:0,1,CUDA,,/tmp\nlocalhost,0:3,1,CUDA,,/tmp\n")
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "worker localhost:0:0 (CUDA) on device 5" in done.stdout
    assert "worker localhost:0:3 (CUDA): cannot create a context" in done.stdout
    assert "device 5" in (folder / "cntxt_localhost_0_0" / "fake.log").read_text()
    (folder / "nodes").write_text("localhost,0:2,1,CUDA,,/tmp\n")
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "No compute devices are alive" in done.stdout


def test_devices_without_the_allocation_list_fail_the_segment_as_retryable(
    tmp_path: Path, file_access: StorageAccess
) -> None:
    relay = Relay(tmp_path, file_access, "job-nodevs")
    relay.upload_bundle(write_bundle(tmp_path / "bundle", 2))
    alloc = relay.allocation()
    alloc.assign(relay.assignment(alloc, engine(2), devices=[0, 1]))
    alloc.start(idle_timeout=1.0, env={"CUDA_VISIBLE_DEVICES": "0"})
    failed = alloc.wait_event({EventKind.FAILED})
    assert failed.retryable and "RELAYMD_ALLOCATION_DEVICES" in (failed.reason or "")
    assert alloc.wait_exit(60) == 0


def test_engine_devices_mapping() -> None:
    env = {"CUDA_VISIBLE_DEVICES": "GPU-b", "RELAYMD_ALLOCATION_DEVICES": "GPU-a,GPU-b,GPU-c"}
    assert engine_devices([], env) == "GPU-b"
    assert engine_devices([2, 0], env) == "GPU-c,GPU-a"
    assert engine_devices([], {}) is None
    for bad in ([3], [1, 1]):
        with pytest.raises(DeviceError, match="this allocation has 3"):
            engine_devices(bad, env)


def test_in_process_openmm_takes_one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    openmm = make_engine(OpenMMSettings(total_steps=1000))
    with pytest.raises(EngineFailure, match="needs a command engine"):
        openmm.use_devices([0, 1])
    openmm.use_devices([2])
    assert openmm.cuda_visible_devices == "3"


@pytest.mark.parametrize("suffix", [".cntl", ".yaml", ".json"])
def test_set_atom_key_replaces_or_adds_one_key(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"atom{suffix}"
    text = {
        ".cntl": "BASENAME = 'x'\nNODEFILE = 'old'\nPRNT_FREQUENCY = 100\n",
        ".yaml": "BASENAME: x\nNODEFILE: old\nPRNT_FREQUENCY: 100\n",
        ".json": '{"BASENAME": "x", "NODEFILE": "old", "PRNT_FREQUENCY": 100}',
    }[suffix]
    path.write_text(text)
    set_atom_key(path, "NODEFILE", "relaymd-nodefile")
    keys = read_atom_keys(path)
    assert keys["NODEFILE"] == "relaymd-nodefile" and keys["BASENAME"] == "x"
    assert str(keys["PRNT_FREQUENCY"]) == "100"


GPUS_CSV = """0,GPU-0a1b2c3d-0000-4000-8000-000000000000,NVIDIA H100 80GB HBM3,81559
1,GPU-0a1b2c3d-0000-4000-8000-000000000001,NVIDIA H100 80GB HBM3,81559
2,GPU-0a1b2c3d-0000-4000-8000-000000000002,NVIDIA A100-SXM4-40GB,40960
3,GPU-0a1b2c3d-0000-4000-8000-000000000003,NVIDIA A100-SXM4-40GB,40960
"""


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The testbed's nvidia-smi stand-in on PATH: like the real one, it lists all 4 GPUs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").symlink_to(REPO / "tests" / "testbed" / "fake_nvidia_smi.py")
    (tmp_path / "gpus.csv").write_text(GPUS_CSV)
    monkeypatch.setenv("FAKE_NVIDIA_SMI_GPUS", str(tmp_path / "gpus.csv"))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


@pytest.mark.usefixtures("fake_nvidia_smi")
@pytest.mark.parametrize(
    ("visible", "names"),
    [
        (None, ["H100", "H100", "A100", "A100"]),
        ("2", ["A100"]),
        ("1,2", ["H100", "A100"]),
        ("GPU-0a1b2c3d-0000-4000-8000-000000000003", ["A100"]),
        ("GPU-0a1b2c3d-0000-4000-8000-00000000000", ["H100", "H100", "A100", "A100"]),
        ("", []),
    ],
)
def test_nvidia_smi_reports_only_the_workers_devices(visible: str | None, names: list[str]) -> None:
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    gpus = query_gpus(env)
    assert [g.name.split()[1].split("-")[0] for g in gpus] == names
    memory = {"H100": 81559, "A100": 40960}
    assert [g.memory_total_mib for g in gpus] == [memory[n] for n in names]
