"""The worker's life in one allocation: heartbeat, wait for assignments, run segments, exit."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from relaymd.mailbox.layout import CREDENTIALS_FILE, WORKER_LOG_FILE
from relaymd.mailbox.models import Assignment, ControlAction, EventKind, WorkerEvent, WorkerState
from relaymd.storage import StorageError, open_store
from relaymd.storage.base import ObjectStore
from worker_entry.credentials import CredentialsError, load_credentials
from worker_entry.handoff_gate import gate_expired, preload_engine, resolve_gate
from worker_entry.heartbeat import HeartbeatWriter, query_gpus
from worker_entry.logging import get_logger, log_to_file
from worker_entry.mailbox_io import GARBLED_GRACE_S, AssignmentRead, Mailbox
from worker_entry.margin import HandoffMargin
from worker_entry.options import WorkerOptions
from worker_entry.segment import SegmentRunner
from worker_entry.status import WorkerStatus
from worker_entry.stopping import StopMonitor

log = get_logger(__name__)


class StartupError(Exception):
    """The worker cannot start; the message says what to fix."""


class Worker:
    def __init__(self, options: WorkerOptions) -> None:
        self.options = options
        self.mailbox = Mailbox(options.alloc_dir)
        self.status = WorkerStatus(options.deadline)
        self.margin = HandoffMargin(options.margin_min_s, options.margin_max_s)
        self.monitor = StopMonitor(
            self.mailbox,
            self.margin,
            options.deadline,
            control_poll_s=options.poll_interval_s,
            warning_lead_s=options.warning_lead_s,
        )
        self.monitor.on_deadline_change = lambda deadline: self.status.update(deadline=deadline)
        self.status.update(handoff_margin_s=self.margin.seconds, platform=options.platform)
        self.heartbeat = HeartbeatWriter(
            self.mailbox, self.status, options.heartbeat_interval_s, query_gpus()
        )
        self._seen: set[tuple[str, int]] = set()
        self._bad_digests: set[str] = set()
        self._expired_digests: set[str] = set()  # gated assignments whose handoff never came
        self.store: ObjectStore | None = None
        self._garbled_since: dict[str, float] = {}

    def _idle_event(self, reason: str) -> None:
        self.mailbox.append(
            WorkerEvent(
                kind=EventKind.IDLE_EXIT, allocation_id=self.mailbox.allocation_id, reason=reason
            )
        )

    def _reject(self, digest: str, reason: str, job_id: str | None, epoch: int | None) -> None:
        self._bad_digests.add(digest)
        if job_id is not None and epoch is not None:
            self._seen.add((job_id, epoch))
        self.mailbox.append(
            WorkerEvent(
                kind=EventKind.FAILED,
                allocation_id=self.mailbox.allocation_id,
                job_id=job_id,
                epoch=epoch,
                reason=reason,
            )
        )

    def _exit_reason(self, idle_since: float) -> str | None:
        if self.monitor.signalled:
            return "signal received while idle"
        action = self.monitor.control_action(None, None)
        if action is ControlAction.STOP:
            return "stop requested in control.json"
        if self.monitor.draining:
            return "drain requested in control.json"
        left = self.monitor.time_left_s()
        if left is not None and left <= self.margin.seconds:
            return f"allocation deadline in {left:.0f}s leaves no time for a segment"
        if time.monotonic() - idle_since >= self.options.idle_timeout_s:
            return f"no assignment for {self.options.idle_timeout_s:g}s"
        return None

    def _held(self) -> bool:
        """`hold` in control.json (ADR 0026): this slot's GPU serves another slot's job, so
        no assignment is taken and the state is `held` until the control goes or changes."""
        control = self.mailbox.read_control()
        held = control is not None and control.action is ControlAction.HOLD
        state = WorkerState.HELD if held else WorkerState.IDLE
        if self.status.snapshot().state is not state:
            log.info("worker_held" if held else "worker_hold_released")
            self.status.update(state=state)
            self.heartbeat.poke()
        return held

    def wait_for_assignment(self) -> Assignment | str:
        """The next (job, epoch) not run yet, or why the worker should leave instead."""
        self.status.clear_job(WorkerState.IDLE)
        self.heartbeat.poke()
        idle_since = time.monotonic()
        while True:
            read: AssignmentRead | None = None
            if self._held():
                idle_since = time.monotonic()  # no idle timeout while held
            else:
                read = self.mailbox.read_assignment()
            if (
                read is not None
                and read.digest not in self._bad_digests
                and read.digest not in self._expired_digests
            ):
                a = read.assignment
                if a is None and read.job_id is None and read.error and "not JSON" in read.error:
                    # Maybe half-written by a non-atomic writer: malformed only if it stays so.
                    first = self._garbled_since.setdefault(read.digest, time.monotonic())
                    if time.monotonic() - first >= GARBLED_GRACE_S:
                        self._reject(read.digest, read.error, None, None)
                elif a is None:
                    key = (read.job_id, read.epoch)
                    if key[0] is None or key[1] is None or key not in self._seen:
                        self._reject(
                            read.digest, read.error or "malformed", read.job_id, read.epoch
                        )
                elif (a.job_id, a.epoch) not in self._seen:
                    if a.allocation_id != self.mailbox.allocation_id:
                        self._reject(
                            read.digest,
                            f"assignment is for allocation {a.allocation_id}, "
                            f"this is {self.mailbox.allocation_id}",
                            a.job_id,
                            a.epoch,
                        )
                    elif a.after_handoff is not None:
                        gated = self._await_handoff(a, read.digest)
                        if isinstance(gated, str):
                            return gated
                        if gated is not None:
                            self._seen.add((a.job_id, a.epoch))
                            return gated
                        self.status.clear_job(WorkerState.IDLE)
                        self.heartbeat.poke()
                        idle_since = time.monotonic()
                        continue
                    else:
                        self._seen.add((a.job_id, a.epoch))
                        return a
            reason = self._exit_reason(idle_since)
            if reason is not None:
                return reason
            time.sleep(self.options.poll_interval_s)

    def _await_handoff(self, a: Assignment, digest: str) -> Assignment | str | None:
        """Wait on a pre-written successor's gate: the assignment resolved to the verified
        handoff checkpoint, an exit reason, or None when withdrawn or expired (ADR 0009)."""
        assert self.store is not None and a.after_handoff is not None
        gate = a.after_handoff
        self.status.update(
            state=WorkerState.PREPARING,
            job_id=a.job_id,
            epoch=a.epoch,
            awaiting_handoff_of=gate.after_epoch,
        )
        self.heartbeat.poke()
        log.info("awaiting_handoff", job_id=a.job_id, epoch=a.epoch, after=gate.after_epoch)
        preload_engine(a)
        while True:
            current = self.mailbox.read_assignment()
            if current is None or current.digest != digest:
                log.info("assignment_withdrawn", job_id=a.job_id, epoch=a.epoch)
                return None
            resolved = resolve_gate(self.store, a)
            if resolved is not None:
                return resolved
            if gate_expired(a):
                log.info("handoff_gate_expired", job_id=a.job_id, epoch=a.epoch)
                self._expired_digests.add(digest)
                return None
            # The idle timeout does not run while waiting: the gate's expiry bounds the wait.
            reason = self._exit_reason(time.monotonic())
            if reason is not None:
                return reason
            time.sleep(self.options.poll_interval_s)

    def run(self, store: ObjectStore, work_root: Path) -> int:
        self.store = store
        self.monitor.install_signal_handlers()
        self.heartbeat.start()
        log.info(
            "worker_started",
            allocation_id=self.mailbox.allocation_id,
            deadline=self.options.deadline,
            warning_lead_s=self.options.warning_lead_s,
            work_dir=str(work_root),
        )
        while True:
            got = self.wait_for_assignment()
            if isinstance(got, str):
                self._idle_event(got)
                return 0
            log.info("assignment_taken", job_id=got.job_id, epoch=got.epoch)
            end = SegmentRunner(
                assignment=got,
                store=store,
                mailbox=self.mailbox,
                status=self.status,
                heartbeat=self.heartbeat,
                monitor=self.monitor,
                margin=self.margin,
                work_root=work_root,
                platform=self.options.platform,
            ).run()
            if end in (EventKind.HANDOFF, EventKind.STOPPED):
                return 0

    def shutdown(self) -> None:
        self.status.update(state=WorkerState.EXITING)
        self.heartbeat.stop()


def remove_credentials(alloc_dir: Path) -> None:
    """The storage keys leave the allocation folder with the worker (they are in memory from
    the start); only a SIGKILL can leave them behind, and the daemon removes those."""
    try:
        (alloc_dir / CREDENTIALS_FILE).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("credentials_not_removed", error=str(exc))


def run_worker(options: WorkerOptions) -> int:
    alloc_dir = options.alloc_dir
    if not alloc_dir.is_dir():
        raise StartupError(f"--alloc-dir {alloc_dir} is not a directory")
    tee = log_to_file(alloc_dir / WORKER_LOG_FILE)
    try:
        return _run(options, alloc_dir)
    finally:
        remove_credentials(alloc_dir)
        log.info("worker_exiting", allocation_id=alloc_dir.name)
        tee.close()


def _run(options: WorkerOptions, alloc_dir: Path) -> int:
    try:
        access = load_credentials(alloc_dir)
    except CredentialsError as exc:
        raise StartupError(str(exc)) from None
    try:
        store = open_store(access)
    except StorageError as exc:
        raise StartupError(f"cannot open storage {access.url}: {exc}") from None
    created = options.work_dir is None
    work_root = options.resolved_work_dir()
    worker = Worker(options)
    try:
        return worker.run(store, work_root)
    finally:
        worker.shutdown()
        if created:
            shutil.rmtree(work_root, ignore_errors=True)
