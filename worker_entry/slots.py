"""`relaymd-worker slots --slot-dir D0 --slot-dir D1 ... <worker options>` (ADR 0026).

The job script of a multi-GPU allocation runs this supervisor instead of one worker. It starts
one worker per slot folder, slot i pinned to the i-th device SLURM gave the job
(`CUDA_VISIBLE_DEVICES`, else 0..N-1), and tells every worker the whole list
(`RELAYMD_ALLOCATION_DEVICES`) so a lead slot can widen its engine to the devices of the slots
it holds. It forwards SIGTERM/SIGUSR1/SIGINT to every worker, SIGKILLs one slot's worker (and
what that worker left running) on `kill` in that slot's control.json, writes a `slot_exited`
event into a slot's events.jsonl when its worker exits, and exits when every worker has.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from pydantic import BaseModel

from relaymd.logging import configure
from relaymd.mailbox.models import ControlAction, EventKind, WorkerEvent
from worker_entry.devices import ALLOCATION_DEVICES_ENV
from worker_entry.logging import get_logger
from worker_entry.mailbox_io import Mailbox
from worker_entry.slot_processes import kill_slot_processes

log = get_logger(__name__)

# Marks every process a slot's worker starts (engines inherit it), to find them after it died.
SLOT_TOKEN_ENV = "RELAYMD_SLOT_TOKEN"
FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
POLL_S = 0.5


class SlotsError(Exception):
    """The supervisor cannot start; the message says what to fix."""


class SlotSpec(BaseModel):
    index: int
    alloc_dir: Path
    device: str  # this slot's CUDA_VISIBLE_DEVICES entry


def allocation_devices(count: int, env: dict[str, str]) -> list[str]:
    """The job's devices, one per slot: SLURM's CUDA_VISIBLE_DEVICES, else 0..count-1."""
    raw = env.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not raw:
        return [str(i) for i in range(count)]
    devices = [d.strip() for d in raw.split(",") if d.strip()]
    if len(devices) < count:
        raise SlotsError(
            f"{count} slot folders but CUDA_VISIBLE_DEVICES={raw!r} names {len(devices)} "
            "devices: request as many GPUs as slots (--gres=gpu:N)"
        )
    return devices[:count]


def slot_specs(slot_dirs: list[Path], env: dict[str, str]) -> list[SlotSpec]:
    devices = allocation_devices(len(slot_dirs), env)
    for folder in slot_dirs:
        if not folder.is_dir():
            raise SlotsError(f"--slot-dir {folder} is not a directory")
    return [
        SlotSpec(index=i, alloc_dir=folder.absolute(), device=devices[i])
        for i, folder in enumerate(slot_dirs)
    ]


class Slot:
    """One slot's worker process."""

    def __init__(self, spec: SlotSpec, token: str) -> None:
        self.spec = spec
        self.token = token
        self.mailbox = Mailbox(spec.alloc_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed_for: str | None = None  # why the supervisor SIGKILLed it
        self.done = False

    def start(self, worker_args: list[str], devices: list[str]) -> None:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = self.spec.device
        env[ALLOCATION_DEVICES_ENV] = ",".join(devices)
        env[SLOT_TOKEN_ENV] = self.token
        command = [sys.executable, "-m", "worker_entry", "--alloc-dir", str(self.spec.alloc_dir)]
        # Its own session: a `kill` reaches the worker's whole process group, signals sent to
        # the supervisor's group reach the worker only through the supervisor.
        self.proc = subprocess.Popen([*command, *worker_args], env=env, start_new_session=True)
        log.info("slot_started", slot=self.spec.index, pid=self.proc.pid, device=self.spec.device)

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def check_kill(self) -> None:
        """SIGKILL the worker and its leftovers on `kill` in this slot's control.json."""
        if self.proc is None or self.killed_for is not None:
            return
        control = self.mailbox.read_control()
        if control is None or control.action is not ControlAction.KILL:
            return
        self.killed_for = control.reason or "kill requested in control.json"
        log.warning("slot_killing", slot=self.spec.index, pid=self.proc.pid, reason=control.reason)
        kill_slot_processes(self.proc.pid, self.token)

    def reap(self) -> bool:
        """True once the worker has exited and its `slot_exited` event is written."""
        if self.done or self.proc is None:
            return True
        rc = self.proc.poll()
        if rc is None:
            return False
        # A worker killed from outside may leave its engine running on the slot's GPU.
        kill_slot_processes(None, self.token)
        reason = self.killed_for or (
            f"worker exited with status {rc}"
            if rc >= 0
            else f"worker ended by {signal.Signals(-rc).name}"
        )
        exited = {"kind": EventKind.SLOT_EXITED, "allocation_id": self.mailbox.allocation_id}
        try:
            self.mailbox.append(
                WorkerEvent.model_validate({**exited, "exit_code": rc, "reason": reason})
            )
        except OSError as exc:
            log.error("slot_exited_not_written", slot=self.spec.index, error=str(exc))
        self.done = True
        return True


class SlotSupervisor:
    def __init__(self, specs: list[SlotSpec], worker_args: list[str], poll_s: float = POLL_S):
        run = f"{os.getpid()}-{time.time_ns()}"
        self.slots = [Slot(spec, f"{run}-{spec.index}") for spec in specs]
        self.devices = [spec.device for spec in specs]
        self.worker_args = worker_args
        self.poll_s = poll_s
        self._pending: list[int] = []

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._pending.append(signum)  # forwarded from the loop, not from inside the handler

    def run(self) -> int:
        # Workers inherit an ignored SIGUSR1 (the job script's `trap '' USR1`) until they
        # install their own handler: an early walltime warning must not kill one.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for slot in self.slots:
            slot.start(self.worker_args, self.devices)
        signal.signal(signal.SIGUSR1, self._on_signal)
        while True:
            while self._pending:
                signum = self._pending.pop(0)
                log.info("slots_forwarding_signal", signal=signal.Signals(signum).name)
                for slot in self.slots:
                    slot.signal(signum)
            for slot in self.slots:
                slot.check_kill()
            if all([slot.reap() for slot in self.slots]):
                log.info("slots_all_exited", slots=len(self.slots))
                return 0
            time.sleep(self.poll_s)


def worker_arguments(rest: list[str]) -> list[str]:
    """The usual worker options, minus any --alloc-dir: each worker gets its slot's folder."""
    kept: list[str] = []
    skip = False
    for arg in rest:
        if skip:
            skip = False
        elif arg == "--alloc-dir":
            skip = True
        elif not arg.startswith("--alloc-dir="):
            kept.append(arg)
    if any(a == "--mailbox" or a.startswith("--mailbox=") for a in kept):
        raise SlotsError("relaymd-worker slots runs workers on shared slot folders, not --mailbox")
    return kept


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaymd-worker slots",
        description="Run one relaymd-worker per GPU slot of a multi-GPU allocation (ADR 0026). "
        "Every other option is passed to each worker, which gets --alloc-dir <its slot folder>.",
    )
    parser.add_argument(
        "--slot-dir",
        action="append",
        type=Path,
        required=True,
        help="a slot's mailbox folder, once per slot, slot 0 first",
    )
    return parser


def main(argv: list[str]) -> int:
    from worker_entry.cli import parse_options

    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        worker_args = worker_arguments(rest)
        specs = slot_specs(args.slot_dir, dict(os.environ))
    except SlotsError as exc:
        parser.error(str(exc))
    # The workers' options are checked once here, so a bad one fails the job at once.
    parse_options(["--alloc-dir", str(specs[0].alloc_dir), *worker_args])
    configure()
    return SlotSupervisor(specs, worker_args).run()
