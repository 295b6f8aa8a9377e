"""heartbeat.json every H seconds from a thread, so a long engine call never stalls it."""

from __future__ import annotations

import os
import socket
import subprocess
import threading

from relaymd.mailbox.models import Heartbeat
from relaymd.models import GpuInfo
from worker_entry.logging import get_logger
from worker_entry.mailbox_io import Mailbox
from worker_entry.provider import provider_machine_id
from worker_entry.status import WorkerStatus
from worker_entry.version import worker_version

log = get_logger(__name__)


def query_gpus() -> list[GpuInfo]:
    """nvidia-smi's view of this node's GPUs; [] when there is no nvidia-smi or it fails."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    gpus = []
    for line in done.stdout.splitlines():
        name, _, memory = line.rpartition(",")
        try:
            gpus.append(GpuInfo(name=name.strip(), memory_total_mib=int(float(memory.strip()))))
        except ValueError:
            continue
    return gpus


class HeartbeatWriter(threading.Thread):
    def __init__(
        self, mailbox: Mailbox, status: WorkerStatus, interval_s: float, gpus: list[GpuInfo]
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self._mailbox = mailbox
        self._status = status
        self._interval = interval_s
        self._gpus = gpus
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._halt = threading.Event()
        self._poke = threading.Event()
        self._hostname = socket.gethostname()
        self._version = worker_version()
        self._machine_id = provider_machine_id()

    def beat(self) -> None:
        """Write one heartbeat now (seq + 1)."""
        snap = self._status.snapshot()
        with self._seq_lock:
            self._seq += 1
            heartbeat = Heartbeat(
                allocation_id=self._mailbox.allocation_id,
                seq=self._seq,
                state=snap.state,
                job_id=snap.job_id,
                epoch=snap.epoch,
                step=snap.step,
                total_steps=snap.total_steps,
                progress=snap.progress,
                ns_per_day=snap.ns_per_day,
                last_checkpoint=snap.last_checkpoint,
                gpus=self._gpus,
                platform=snap.platform,
                deadline=snap.deadline,
                handoff_margin_s=snap.handoff_margin_s,
                awaiting_handoff_of=snap.awaiting_handoff_of,
                hostname=self._hostname,
                pid=os.getpid(),
                worker_version=self._version,
                machine_id=self._machine_id,
            )
            try:
                self._mailbox.write_heartbeat(heartbeat)
            except OSError as exc:
                log.warning("heartbeat_write_failed", error=str(exc))

    def poke(self) -> None:
        """Write soon (state changes), without waiting for the interval."""
        self._poke.set()

    def run(self) -> None:
        while not self._halt.is_set():
            self.beat()
            self._poke.wait(self._interval)
            self._poke.clear()

    def stop(self) -> None:
        self._halt.set()
        self._poke.set()
        self.join(timeout=10)
        self.beat()  # the final state (exiting) is what the daemon sees last
