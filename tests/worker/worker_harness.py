"""The test plays the daemon: it writes assignment.json/control.json, runs real
`relaymd-worker` processes and reads their events, heartbeats and checkpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from relaymd.mailbox.files import atomic_write_bytes, atomic_write_model, read_events, read_model
from relaymd.mailbox.layout import CONTROL_FILE, EVENTS_FILE, HEARTBEAT_FILE
from relaymd.mailbox.models import (
    Assignment,
    Control,
    ControlAction,
    EventKind,
    Heartbeat,
    WorkerEvent,
)
from relaymd.models import (
    CheckpointRef,
    ObjectRef,
    StorageAccess,
)
from relaymd.storage import ObjectStore, open_store
from relaymd.storage.bundle import pack_bundle
from relaymd.storage.keys import bundle_key
from tests.support.waiting import poll_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TERMINAL = {EventKind.HANDOFF, EventKind.STOPPED, EventKind.COMPLETED, EventKind.FAILED}
CHECKPOINT_EVERY = 20  # steps: the tiny water box's relays checkpoint often
MARGIN_MAX_S = 2.0  # every harness worker hands off at most this long before its deadline


def openmm_engine(total: int, topology: str | None = "topology.pdb") -> dict[str, object]:
    """The OpenMM engine settings of the worker relay tests (one checkpoint per 20 steps)."""
    engine: dict[str, object] = {
        "kind": "openmm",
        "total_steps": total,
        "checkpoint_every_steps": CHECKPOINT_EVERY,
        "report_every_steps": 10,
        "dcd_every_steps": 20,
    }
    if topology is not None:
        engine["topology"] = topology
    return engine


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> object:
    value = poll_until(predicate, timeout, every_s=0.05)
    if not value:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")
    return value


def worker_env() -> dict[str, str]:
    """This process's environment without SLURM's or RelayMD's settings (and GPUs)."""
    skip = ("SLURM_", "RELAYMD_", "CUDA_VISIBLE_DEVICES")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env["PYTHONPATH"] = str(REPO)
    return env


class Allocation:
    """One allocation folder and the worker process running in it."""

    def __init__(self, root: Path, allocation_id: str, access: StorageAccess) -> None:
        self.dir = root / "alloc" / allocation_id
        self.dir.mkdir(parents=True, mode=0o700)
        self.id = allocation_id
        atomic_write_bytes(self.dir / "credentials", access.credentials_json().encode(), 0o600)
        self.proc: subprocess.Popen[bytes] | None = None
        self.work_dir = root / "work" / allocation_id

    def start(
        self, *extra: str, idle_timeout: float = 30.0, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        args = [
            sys.executable, "-m", "worker_entry",
            "--alloc-dir", str(self.dir),
            "--heartbeat-interval", "0.2",
            "--idle-timeout", str(idle_timeout),
            "--margin-min", "0.5",
            "--margin-max", str(MARGIN_MAX_S),
            "--platform", "Reference",
            "--work-dir", str(self.work_dir),
            *extra,
        ]  # fmt: skip
        environment = worker_env()
        environment.update(env or {})
        self.proc = subprocess.Popen(
            args, cwd=REPO, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return self.proc

    def wait_exit(self, timeout: float = 120.0) -> int:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"worker did not exit; log:\n{self.log()}") from None
        return rc

    def log(self) -> str:
        path = self.dir / "worker.log"
        return path.read_text() if path.exists() else ""

    def assign(self, assignment: Assignment) -> None:
        atomic_write_model(self.dir / "assignment.json", assignment)

    def write_raw_assignment(self, data: bytes) -> None:
        atomic_write_bytes(self.dir / "assignment.json", data)

    def control(self, action: ControlAction, job_id: str | None, epoch: int | None) -> None:
        atomic_write_model(
            self.dir / CONTROL_FILE, Control(action=action, job_id=job_id, epoch=epoch)
        )

    def events(self) -> list[WorkerEvent]:
        return read_events(self.dir / EVENTS_FILE, 0)[0]

    def heartbeat(self) -> Heartbeat | None:
        return read_model(self.dir / HEARTBEAT_FILE, Heartbeat)

    def wait_event(
        self, kinds: set[EventKind], timeout: float = 60.0, epoch: int | None = None
    ) -> WorkerEvent:
        def find() -> WorkerEvent | None:
            for event in self.events():
                if event.kind in kinds and (epoch is None or event.epoch == epoch):
                    return event
            if self.proc is not None and self.proc.poll() is not None:
                # Exited: one last look, then give up with the log.
                for event in self.events():
                    if event.kind in kinds and (epoch is None or event.epoch == epoch):
                        return event
                raise AssertionError(f"worker exited {self.proc.returncode}; log:\n{self.log()}")
            return None

        found = wait_for(find, timeout, f"{kinds} event")
        assert isinstance(found, WorkerEvent)
        return found

    def kill(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


class Relay:
    """A job in a store, and the daemon's bookkeeping: epoch and resume pointer."""

    def __init__(self, root: Path, access: StorageAccess, job_id: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.access = access
        self.store: ObjectStore = open_store(access)
        self.job_id = job_id
        self.epoch = 0
        self.pointer: CheckpointRef | None = None
        self.fallbacks: list[CheckpointRef] = []
        self.allocations = 0

    def upload_bundle(self, source_dir: Path) -> ObjectRef:
        archive = self.root / f"{self.job_id}-bundle.tar.gz"
        pack_bundle(source_dir, archive)
        self.bundle = self.store.put_file(bundle_key(self.job_id), archive)
        return self.bundle

    def allocation(self) -> Allocation:
        self.allocations += 1
        return Allocation(self.root, f"a{self.allocations:03d}", self.access)

    def assignment(self, alloc: Allocation, engine: object, **extra: object) -> Assignment:
        self.epoch += 1
        return Assignment.model_validate(
            {
                "allocation_id": alloc.id,
                "job_id": self.job_id,
                "epoch": self.epoch,
                "engine": engine,
                "bundle": self.bundle,
                "resume": self.pointer,
                "fallbacks": self.fallbacks,
                **extra,
            }
        )

    def assigned(self, engine: object, **extra: object) -> Allocation:
        """A new allocation holding the next epoch's assignment (not started)."""
        alloc = self.allocation()
        alloc.assign(self.assignment(alloc, engine, **extra))
        return alloc

    def advance(self, events: list[WorkerEvent]) -> None:
        """The daemon's rule: only checkpoints of the current epoch move the pointer."""
        for event in events:
            if event.kind is EventKind.CHECKPOINT and event.epoch == self.epoch:
                assert event.checkpoint is not None
                if self.pointer is not None:
                    self.fallbacks.insert(0, self.pointer)
                self.pointer = event.checkpoint

    def run_segment(
        self, engine: dict[str, object], stop_after_checkpoints: int | None, *worker_args: str
    ) -> tuple[Allocation, WorkerEvent]:
        """One allocation, one epoch: stop it (control.json) after N checkpoints, or let it
        end; then advance the pointer as the daemon would."""
        alloc = self.assigned(engine)
        alloc.start(*worker_args, idle_timeout=1.0)
        epoch = self.epoch
        if stop_after_checkpoints is not None:

            def seen() -> bool:
                events = alloc.events()
                done = any(e.kind in TERMINAL for e in events)
                ckpts = [e for e in events if e.kind is EventKind.CHECKPOINT and e.epoch == epoch]
                return done or len(ckpts) >= stop_after_checkpoints

            wait_for(seen, 60, "checkpoint events")
            alloc.control(ControlAction.STOP, self.job_id, epoch)
        end = alloc.wait_event(TERMINAL, timeout=60, epoch=epoch)
        assert alloc.wait_exit(60) == 0
        self.advance(alloc.events())
        return alloc, end


def deadline_windows(
    root: Path, access: StorageAccess, bundle_dir: Path, windows_s: tuple[int, ...]
) -> Iterator[tuple[Relay, int]]:
    """A fresh job (bundle uploaded) for each window, shortest first. A deadline is fixed
    before its worker starts, so a machine too busy to reach the first step in time proves
    nothing either way: a test that sees that tries the next, longer window."""
    for window_s in windows_s:
        relay = Relay(root / f"{window_s}s", access, f"job-deadline-{window_s}")
        relay.upload_bundle(bundle_dir)
        yield relay, window_s
