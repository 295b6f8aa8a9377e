"""heartbeat.json every H seconds from a thread, so a long engine call never stalls it."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Mapping

from relaymd.mailbox.models import Heartbeat
from relaymd.models import GpuInfo
from worker_entry.logging import get_logger
from worker_entry.mailbox_io import Mailbox
from worker_entry.provider import provider_machine_id
from worker_entry.status import WorkerStatus
from worker_entry.version import worker_version

log = get_logger(__name__)


QUERY = "index,uuid,name,memory.total"


def _nvidia_smi(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", *args], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _mig_parents(listing: str) -> dict[str, str]:
    """MIG-<uuid> -> its GPU's index, from `nvidia-smi -L` (`GPU 0: ... (UUID: GPU-...)`
    followed by indented `MIG ... (UUID: MIG-...)` lines)."""
    parents: dict[str, str] = {}
    gpu = ""
    for line in listing.splitlines():
        uuid = line.rpartition("UUID: ")[2].rstrip(")").strip()
        if line.startswith("GPU "):
            gpu = line[4:].split(":", 1)[0].strip()
        elif uuid.startswith("MIG-") and gpu:
            parents[uuid] = gpu
    return parents


def visible_selector(env: Mapping[str, str]) -> set[str] | None:
    """The CUDA_VISIBLE_DEVICES entries (indices, GPU-/MIG- UUIDs); None when unset (all).
    nvidia-smi ignores that variable, so the worker filters its answer itself."""
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    wanted = {entry.strip() for entry in raw.split(",") if entry.strip()}
    if any(entry.startswith("MIG-") for entry in wanted):
        parents = _mig_parents(_nvidia_smi("-L") or "")
        wanted |= {parents[e] for e in wanted if e in parents}
    return wanted


def _selected(index: str, uuid: str, wanted: set[str]) -> bool:
    # CUDA also accepts a unique prefix of a GPU UUID.
    return index in wanted or any(w.startswith("GPU-") and uuid.startswith(w) for w in wanted)


def query_gpus(env: Mapping[str, str] | None = None) -> list[GpuInfo]:
    """nvidia-smi's view of the GPUs this worker may use (its CUDA_VISIBLE_DEVICES; a MIG
    instance reports its whole GPU); [] when there is no nvidia-smi or it fails."""
    out = _nvidia_smi(f"--query-gpu={QUERY}", "--format=csv,noheader,nounits")
    if out is None:
        return []
    wanted = visible_selector(os.environ if env is None else env)
    gpus = []
    for line in out.splitlines():
        index, _, rest = line.partition(",")
        uuid, _, rest = rest.partition(",")
        name, _, memory = rest.rpartition(",")
        if wanted is not None and not _selected(index.strip(), uuid.strip(), wanted):
            continue
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
                cuda_visible_devices=snap.cuda_visible_devices,
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
