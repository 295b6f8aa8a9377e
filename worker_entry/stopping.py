"""Why a segment must end early: SIGTERM, a stop in control.json, or the deadline - margin.

The engine asks `check()` between chunks of work; the answer sticks once given.
SIGTERM/SIGINT (scancel, preemption, SLURM's own TERM at the time limit) mean "checkpoint and
stop now". SIGUSR1 is SLURM's early walltime warning (`--signal=B:USR1@lead`): it only corrects
the deadline (worker_entry/deadline.py), so the segment still runs until deadline - margin.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

from pydantic import BaseModel

from relaymd.mailbox.models import ControlAction, EventKind
from worker_entry.deadline import Deadline
from worker_entry.logging import get_logger
from worker_entry.mailbox_io import Mailbox
from worker_entry.margin import HandoffMargin

log = get_logger(__name__)


class StopRequest(BaseModel):
    event: EventKind  # HANDOFF (deadline, SIGTERM) or STOPPED (control)
    reason: str
    requested_at: float  # time.time() when it was decided: checkpoints must be newer


class StopMonitor:
    def __init__(
        self,
        mailbox: Mailbox,
        margin: HandoffMargin,
        deadline: datetime | None,
        control_poll_s: float = 0.5,
        warning_lead_s: float | None = None,
    ) -> None:
        self._mailbox = mailbox
        self._margin = margin
        self._deadline = Deadline(deadline, warning_lead_s)
        self._control_poll_s = control_poll_s
        self._signal = threading.Event()
        self._signal_name = ""
        self._last_control_read = 0.0
        self._cached_action: ControlAction | None = None
        self.draining = False
        self._request: StopRequest | None = None
        # Told when the walltime warning moved the deadline (the heartbeat reports it).
        self.on_deadline_change: Callable[[datetime | None], None] | None = None

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_warning)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signal_name = signal.Signals(signum).name
        self._signal.set()

    def _on_warning(self, _signum: int, _frame: FrameType | None) -> None:
        # Only a timestamp here (a signal handler must not log or take locks).
        self._deadline.warn()
        if self._deadline.warning_lead_s is None and self._deadline.known is None:
            # Neither a deadline nor the warning's lead: the warning is all there is to go by.
            self._signal_name = "SIGUSR1 (walltime warning, no deadline known)"
            self._signal.set()

    @property
    def signalled(self) -> bool:
        return self._signal.is_set()

    @property
    def deadline(self) -> datetime | None:
        if self._deadline.apply_warning():
            log.info(
                "walltime_warning",
                deadline=self._deadline.value,
                lead_s=self._deadline.warning_lead_s,
            )
            if self.on_deadline_change is not None:
                self.on_deadline_change(self._deadline.value)
        return self._deadline.value

    def time_left_s(self) -> float | None:
        deadline = self.deadline
        if deadline is None:
            return None
        return (deadline - datetime.now(UTC)).total_seconds()

    def handoff_due(self) -> bool:
        left = self.time_left_s()
        return left is not None and left <= self._margin.seconds

    def control_action(self, job_id: str | None, epoch: int | None) -> ControlAction | None:
        now = time.monotonic()
        if now - self._last_control_read >= self._control_poll_s:
            self._last_control_read = now
            self._cached_action = self._mailbox.applicable_control(job_id, epoch)
            if self._cached_action is ControlAction.DRAIN and not self.draining:
                log.info("drain_requested", job_id=job_id)
                self.draining = True
        return self._cached_action

    def reset(self) -> None:
        """A new job: forget the previous job's stop (signals and drain stay)."""
        self._request = None
        self._last_control_read = 0.0

    def check(self, job_id: str | None, epoch: int | None) -> StopRequest | None:
        if self._request is not None:
            return self._request
        request: StopRequest | None = None
        if self.signalled:
            request = StopRequest(
                event=EventKind.HANDOFF,
                reason=f"{self._signal_name or 'signal'} received; handing off",
                requested_at=time.time(),
            )
        elif self.control_action(job_id, epoch) is ControlAction.STOP:
            request = StopRequest(
                event=EventKind.STOPPED,
                reason="stop requested in control.json",
                requested_at=time.time(),
            )
        elif self.handoff_due():
            request = StopRequest(
                event=EventKind.HANDOFF,
                reason=f"allocation deadline in {self.time_left_s():.0f}s "
                f"(margin {self._margin.seconds:.0f}s)",
                requested_at=time.time(),
            )
        if request is not None:
            log.info("stop_decided", job_id=job_id, reason=request.reason)
            self._request = request
        return request
