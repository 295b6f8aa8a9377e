"""The faults of the chaos campaign (bench/chaos.py), each caused from outside RelayMD.

Signals to real processes (worker, engine, daemon, moto, sshd), `scancel` and `scontrol` on the
real SLURM clusters, bytes written into the mailbox and into the moto bucket. A fault with a
duration returns its undo; the campaign keeps every pending undo and runs it in `finally`, so
the testbed is left as it was found.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from relaymd.mailbox.files import read_model
from relaymd.mailbox.models import Heartbeat, WorkerState
from relaymd.models import CheckpointManifest, Job
from tests.daemon.daemon_e2e_support import kill9, start_daemon
from tests.support.waiting import poll_until
from tests.testbed.testbed import (
    Testbed,
    moto_pid,
    process_stopped,
    slurm,
    sshd_listener,
    sshd_sessions,
    storage_env,
)

T = TypeVar("T")
Undo = Callable[[], None]
# Waiting for a fault's target ends with the campaign (all jobs final, or its deadline); this
# bounds it where the campaign sets no deadline.
TARGET_WAIT_MAX_S = 900.0
CHAOS_REASON = "relaymd-chaos"


class FaultKind(StrEnum):
    WORKER_KILL = "worker SIGKILL"
    ENGINE_KILL = "engine SIGKILL"
    SCANCEL = "scancel"
    NODE_DOWN = "node down"
    SSHD_STOP = "sshd stopped"
    DAEMON_KILL = "daemon SIGKILL + offline"
    STORE_OUTAGE = "object store unreachable"
    HEARTBEAT_HALF = "heartbeat half-written, worker frozen"
    CHECKPOINT_CORRUPT = "checkpoint object corrupted"


class PlannedFault(BaseModel):
    kind: FaultKind
    at_s: float  # seconds after the daemon started
    pick: float  # in [0, 1): which of the candidate targets
    cluster: str  # for cluster-wide faults (node down, sshd)
    hold_s: float = 0.0  # how long a fault with a duration lasts


class FaultRecord(BaseModel):
    kind: FaultKind
    planned_at_s: float
    at_s: float | None = None
    target: str = ""
    injected: bool = False
    note: str = ""


class RunningWorker(BaseModel):
    cluster: str
    allocation_id: str
    folder: Path
    heartbeat: Heartbeat


@dataclass
class ChaosWorld:
    """What the faults act on: the testbed, this run's daemon, jobs and bucket."""

    tb: Testbed
    run: str
    root: Path
    config: Path
    daemon: subprocess.Popen[bytes]
    bucket: Any  # a boto3 S3 client bound to `bucket_name`
    bucket_name: str
    key_prefix: str
    total_steps: dict[str, int]  # job id -> steps (openmm) or samples (command)
    command_jobs: set[str]
    hits: Counter[str] = field(default_factory=Counter)
    # Workers this campaign SIGKILLed: until the kernel has ended them their pid still looks
    # alive and their heartbeat fresh, and a later fault must not pick them.
    killed: set[int] = field(default_factory=set)
    # Set by the campaign: whether every job has ended, and its deadline (time.monotonic()).
    all_final: Callable[[], bool] = lambda: False
    deadline: float = math.inf

    def kill_worker(self, pid: int) -> None:
        self.killed.add(pid)
        os.kill(pid, signal.SIGKILL)

    def alloc_folders(self) -> list[tuple[str, Path]]:
        found = []
        for c in self.tb.clusters:
            base = Path(c.scratch) / self.run / "alloc"
            if base.is_dir():
                found += [(c.name, p) for p in sorted(base.iterdir()) if p.is_dir()]
        return found

    def start_daemon(self) -> None:
        self.daemon = start_daemon(self.root, self.config, extra_env=storage_env(self.tb))

    def wait_for_target(self, find: Callable[[], list[T]], every_s: float = 0.5) -> list[T]:
        """`find()`'s first non-empty answer. A busy machine may take minutes to start the
        next worker after an earlier fault, so this waits until a target exists, and gives up
        only once none can come: every job has ended, or the campaign's deadline passed."""

        def found_or_over() -> tuple[list[T]] | None:
            targets = find()
            if targets or self.all_final() or time.monotonic() >= self.deadline:
                return (targets,)
            return None

        bound = min(self.deadline - time.monotonic(), TARGET_WAIT_MAX_S)
        answer = poll_until(found_or_over, max(bound, every_s), every_s)
        return answer[0] if answer else []

    def no_target(self, what: str) -> str:
        why = "every job had ended" if self.all_final() else "the campaign's deadline passed"
        return f"no {what}: {why}"


def _alive(pid: int) -> bool:
    """Running, not just present: a worker SIGKILLed a moment ago stays a zombie until its
    parent reaps it, and a later fault must not pick it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def running_workers(world: ChaosWorld, *, command_only: bool = False) -> list[RunningWorker]:
    """Workers of this run simulating one of its jobs now (heartbeat fresh, process alive)."""
    found = []
    for cluster, folder in world.alloc_folders():
        path = folder / "heartbeat.json"
        beat = read_model(path, Heartbeat)
        if beat is None or beat.state is not WorkerState.RUNNING or beat.job_id is None:
            continue
        if beat.job_id not in world.total_steps or beat.pid in world.killed:
            continue
        if not _alive(beat.pid):
            continue
        if command_only and beat.job_id not in world.command_jobs:
            continue
        if time.time() - path.stat().st_mtime > 15:
            continue
        found.append(
            RunningWorker(cluster=cluster, allocation_id=folder.name, folder=folder, heartbeat=beat)
        )
    return found


def _choose(world: ChaosWorld, candidates: list[RunningWorker], pick: float) -> RunningWorker:
    """The least-hit job's worker (spreads faults over jobs), ties broken by `pick`."""
    least = min(world.hits[w.heartbeat.job_id or ""] for w in candidates)
    pool = sorted(
        (w for w in candidates if world.hits[w.heartbeat.job_id or ""] == least),
        key=lambda w: w.allocation_id,
    )
    chosen = pool[int(pick * len(pool))]
    world.hits[chosen.heartbeat.job_id or ""] += 1
    return chosen


def _describe(w: RunningWorker) -> str:
    return (
        f"{w.cluster}/{w.allocation_id} job {w.heartbeat.job_id} epoch {w.heartbeat.epoch}"
        f" step {w.heartbeat.step}"
    )


# -- faults on one worker ------------------------------------------------------------------


def worker_kill(world: ChaosWorld, fault: PlannedFault, record: FaultRecord) -> Undo | None:
    target = world.wait_for_target(lambda: running_workers(world))
    if not target:
        record.note = world.no_target("running worker")
        return None
    w = _choose(world, target, fault.pick)
    world.kill_worker(w.heartbeat.pid)
    record.target, record.injected = _describe(w), True
    return None


def engine_kill(world: ChaosWorld, fault: PlannedFault, record: FaultRecord) -> Undo | None:
    def engines() -> list[tuple[RunningWorker, int]]:
        return [
            (w, child)
            for w in running_workers(world, command_only=True)
            for child in children(w.heartbeat.pid)
        ]

    found = world.wait_for_target(engines)
    if not found:
        record.note = world.no_target("running command engine")
        return None
    w = _choose(world, [w for w, _ in found], fault.pick)
    engine = next(child for worker, child in found if worker.allocation_id == w.allocation_id)
    os.kill(engine, signal.SIGKILL)
    record.target, record.injected = f"{_describe(w)} engine pid {engine}", True
    return None


def _scheduler_id(world: ChaosWorld, cluster: str, allocation_id: str) -> str | None:
    out = slurm(world.tb, cluster, "squeue", "-h", "-n", f"relaymd-{allocation_id}", "-o", "%i")
    return out.split()[0] if out.split() else None


def scancel(world: ChaosWorld, fault: PlannedFault, record: FaultRecord) -> Undo | None:
    def targets() -> list[RunningWorker]:
        return [
            w
            for w in running_workers(world)
            if _scheduler_id(world, w.cluster, w.allocation_id) is not None
        ]

    found = world.wait_for_target(targets)
    if not found:
        record.note = world.no_target("running allocation")
        return None
    w = _choose(world, found, fault.pick)
    job = _scheduler_id(world, w.cluster, w.allocation_id)
    if job is None:
        record.note = f"{w.allocation_id} left squeue before scancel"
        return None
    slurm(world.tb, w.cluster, "scancel", job)
    record.target, record.injected = f"{_describe(w)} slurm job {job}", True
    return None


def heartbeat_half(world: ChaosWorld, fault: PlannedFault, record: FaultRecord) -> Undo | None:
    """Freeze a worker (and its engine) and leave its heartbeat half-written: the daemon sees
    no news, judges it hung and moves the job on; when thawed, the old worker may still write
    checkpoints of its fenced epoch, which must never become a resume point."""
    found = world.wait_for_target(lambda: running_workers(world))
    if not found:
        record.note = world.no_target("running worker")
        return None
    w = _choose(world, found, fault.pick)
    frozen = [w.heartbeat.pid, *children(w.heartbeat.pid)]

    def thaw() -> None:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    path = w.folder / "heartbeat.json"
    try:
        data = path.read_bytes()
        with open(path, "r+b") as fh:  # in place, not atomic: what a dying writer leaves
            fh.truncate(len(data) // 2)
    except OSError:
        thaw()
        raise
    record.target, record.injected = f"{_describe(w)} frozen pids {frozen}", True
    return thaw


def _manifests(world: ChaosWorld, job_id: str) -> list[tuple[int, int, str]]:
    """(epoch, seq, manifest key) of every checkpoint of `job_id` in the bucket, newest last."""
    prefix = f"{world.key_prefix}jobs/{job_id}/checkpoints/"
    found = []
    for key in list_keys(world, prefix):
        if key.endswith("/manifest.json"):
            epoch, seq = key[len(prefix) :].split("/", 1)[0].split("-")
            found.append((int(epoch), int(seq), key))
    return sorted(found)


def list_keys(world: ChaosWorld, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in world.bucket.get_paginator("list_objects_v2").paginate(
        Bucket=world.bucket_name, Prefix=prefix
    ):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def _daemon_checkpoints(world: ChaosWorld, job_id: str) -> set[str]:
    """The checkpoint prefixes the daemon holds for a job (its resume point and fallbacks),
    read from its state file without a lock (`mode=ro`): test setup, not a verdict."""
    path = world.root / "state" / "state.sqlite"
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            row = db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
    except sqlite3.Error:
        return set()
    if row is None:
        return set()
    job = Job.model_validate_json(row[0])
    refs = [job.checkpoint, *job.fallbacks] if job.checkpoint else list(job.fallbacks)
    return {ref.prefix for ref in refs}


def checkpoint_corrupt(world: ChaosWorld, fault: PlannedFault, record: FaultRecord) -> Undo | None:
    """Kill a worker, then flip bytes in its job's newest checkpoint (same size, so only the
    sha256 on download catches it): the next segment must fall back to an older one."""

    def targets() -> list[RunningWorker]:
        ok = []
        for w in running_workers(world):
            job = w.heartbeat.job_id or ""
            manifests = _manifests(world, job)
            if len(manifests) < 2:
                continue
            # The fault tests falling back, so an older checkpoint the daemon itself verified
            # must survive the corruption: one the daemon never accepted (an allocation that
            # died before its event was read) is pruned, not a fallback.
            newest = manifests[-1][2].removeprefix(world.key_prefix).removesuffix("manifest.json")
            if not _daemon_checkpoints(world, job) - {newest}:
                continue
            body = world.bucket.get_object(Bucket=world.bucket_name, Key=manifests[-1][2])
            manifest = CheckpointManifest.model_validate_json(body["Body"].read())
            # Never the final checkpoint: that one is the job's result, not a resume point.
            if manifest.step < world.total_steps[job] * 0.8:
                ok.append(w)
        return ok

    found = world.wait_for_target(targets, every_s=2.0)
    if not found:
        record.note = world.no_target("running job with two checkpoints")
        return None
    w = _choose(world, found, fault.pick)
    world.kill_worker(w.heartbeat.pid)
    time.sleep(1.0)  # an upload in flight dies with the worker
    epoch, seq, key = _manifests(world, w.heartbeat.job_id or "")[-1]
    manifest = CheckpointManifest.model_validate_json(
        world.bucket.get_object(Bucket=world.bucket_name, Key=key)["Body"].read()
    )
    prefix = key[: -len("manifest.json")]
    flipped = []
    for item in manifest.files:
        if item.size == 0:
            continue
        obj = prefix + item.path
        data = bytearray(world.bucket.get_object(Bucket=world.bucket_name, Key=obj)["Body"].read())
        middle = len(data) // 2
        for i in range(middle, min(len(data), middle + 64)):
            data[i] ^= 0xFF
        world.bucket.put_object(Bucket=world.bucket_name, Key=obj, Body=bytes(data))
        flipped.append(item.path)
    record.target = f"{_describe(w)}; checkpoint {epoch}-{seq} step {manifest.step}: {flipped}"
    record.injected = True
    return None


# -- cluster-wide and workstation faults -----------------------------------------------------


def node_is_down(tb: Testbed, cluster: str, node: str) -> bool:
    states = slurm(tb, cluster, "sinfo", "-h", "-N", "-n", node, "-o", "%T").lower()
    return any(word in states for word in ("down", "drain", "fail"))


def node_down(world: ChaosWorld, fault: PlannedFault, record: FaultRecord) -> Undo | None:
    node = world.tb.cluster(fault.cluster).node
    slurm(
        world.tb,
        fault.cluster,
        "scontrol",
        "update",
        f"nodename={node}",
        "state=down",
        f"reason={CHAOS_REASON}",
    )
    record.target, record.injected = f"{fault.cluster}/{node} for {fault.hold_s:.0f} s", True

    def resume() -> None:
        # ReturnToService=2: slurmd's next registration may already have brought it back.
        if node_is_down(world.tb, fault.cluster, node):
            slurm(world.tb, fault.cluster, "scontrol", "update", f"nodename={node}", "state=resume")

    return resume


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def sshd_stop(world: ChaosWorld, fault: PlannedFault, record: FaultRecord) -> Undo | None:
    listener, command = sshd_listener(fault.cluster)
    sessions = sshd_sessions(listener)
    os.kill(listener, signal.SIGTERM)
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    record.target, record.injected = f"{fault.cluster} sshd for {fault.hold_s:.0f} s", True
    port = world.tb.cluster(fault.cluster).ssh_port

    def restart() -> None:
        poll_until(lambda: not _alive(listener), 10, every_s=0.2)
        subprocess.run(command, check=True)
        if not poll_until(lambda: _port_open(port), 20):
            raise RuntimeError(f"sshd of {fault.cluster} did not come back on port {port}")

    return restart


def daemon_kill(world: ChaosWorld, fault: PlannedFault, record: FaultRecord) -> Undo | None:
    kill9(world.daemon)
    record.target, record.injected = f"daemon offline for {fault.hold_s:.0f} s", True
    return world.start_daemon


def store_outage(world: ChaosWorld, fault: PlannedFault, record: FaultRecord) -> Undo | None:
    """moto keeps its objects in memory, so it is frozen (SIGSTOP), not stopped: connections
    hang like a black-holed network and resume with every object intact on SIGCONT."""
    pid = moto_pid()
    os.kill(pid, signal.SIGSTOP)
    record.target, record.injected = f"moto pid {pid} frozen for {fault.hold_s:.0f} s", True
    return lambda: os.kill(pid, signal.SIGCONT)


INJECTORS: dict[FaultKind, Callable[[ChaosWorld, PlannedFault, FaultRecord], Undo | None]] = {
    FaultKind.WORKER_KILL: worker_kill,
    FaultKind.ENGINE_KILL: engine_kill,
    FaultKind.SCANCEL: scancel,
    FaultKind.NODE_DOWN: node_down,
    FaultKind.SSHD_STOP: sshd_stop,
    FaultKind.DAEMON_KILL: daemon_kill,
    FaultKind.STORE_OUTAGE: store_outage,
    FaultKind.HEARTBEAT_HALF: heartbeat_half,
    FaultKind.CHECKPOINT_CORRUPT: checkpoint_corrupt,
}


def heal_leftovers(tb: Testbed) -> list[str]:
    """Undo what a chaos run killed mid-fault may have left: a frozen moto, a node this bench
    set down. Returns what was healed."""
    healed = []
    with contextlib.suppress(OSError, ValueError):
        pid = moto_pid()
        if process_stopped(pid):
            os.kill(pid, signal.SIGCONT)
            healed.append(f"moto pid {pid} thawed")
    for c in tb.clusters:
        reason = slurm(tb, c.name, "sinfo", "-h", "-N", "-n", c.node, "-o", "%E").strip()
        if reason == CHAOS_REASON and node_is_down(tb, c.name, c.node):
            slurm(tb, c.name, "scontrol", "update", f"nodename={c.node}", "state=resume")
            healed.append(f"{c.name}/{c.node} resumed")
    return healed
