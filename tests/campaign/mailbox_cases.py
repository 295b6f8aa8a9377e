"""A hostile (or buggy) worker writing its mailbox, against the daemon's real cycle.

`MailboxBench` is one cluster runner with the real read/write scripts run by the real local
transport, a real SQLite state file and a real file:// object store. Job j1 runs at epoch 2
on allocation a1 with its resume pointer at checkpoint 2-1 (step 10, fallback 1-1); the
worker has also uploaded 2-2 and 2-3 without reporting them. Job j2 is held with checkpoint
2-5 of its own. Before every cycle the daemon's clock reference for a1 is aged past
`stale_after_s`, so only a heartbeat that counts keeps the allocation alive.

Verdicts never come from RelayMD's own objects: the state file is read with plain sqlite3,
storage by walking its folder and hashing the manifest bytes.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from relaymd.daemon.context import DaemonContext
from relaymd.daemon.runner import ClusterRunner
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.models import (
    Allocation,
    AllocationState,
    CheckpointRef,
    ClusterProfile,
    DaemonSettings,
    Job,
    JobSpec,
    JobState,
    ObjectRef,
    OpenMMSettings,
    Partition,
    StorageAccess,
    WorkerSettings,
    utcnow,
)
from relaymd.scheduler.base import EndState, SchedulerJob, SchedulerPhase
from relaymd.storage import open_store
from relaymd.storage.checkpoints import upload_checkpoint
from relaymd.transport import LocalTransport

STALE_AFTER_S = 300.0
TOTAL_STEPS = 100


class QueueFileScheduler:
    """The scheduler's view is a text file `<allocation> <scheduler id> <phase> [end]`."""

    def __init__(self, scratch: Path) -> None:
        self.queue = scratch / "queue"

    def query_snippet(self, profile: Any, ids: list[str]) -> str:
        return f"cat {shlex.quote(str(self.queue))} 2>/dev/null; true"

    def parse_query(self, text: str) -> list[SchedulerJob]:
        jobs = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                end = parts[3] if len(parts) > 3 else None
                jobs.append(
                    SchedulerJob(
                        allocation_id=parts[0],
                        scheduler_id=parts[1],
                        phase=SchedulerPhase(parts[2]),
                        raw_state=end or parts[2].upper(),
                        end_state=EndState.parse(end) if end else None,
                        node="n1",
                    )
                )
        return jobs

    def render_job_script(self, alloc: Any, profile: Any, worker_args: list[str]) -> str:
        return "#!/bin/bash\nexit 0\n"

    def submit_snippet(self, alloc: Any, script_path: str) -> str:
        q = shlex.quote(str(self.queue))
        return f"echo {alloc.id} 9{alloc.id[-4:]} pending >> {q}; echo SUBMITTED {alloc.id} 9"

    def parse_submit(self, text: str) -> list[SimpleNamespace]:
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "SUBMITTED":
                out.append(
                    SimpleNamespace(allocation_id=parts[1], scheduler_id=parts[2], error=None)
                )
        return out

    def cancel_snippet(self, ids: list[str]) -> str:
        return "true"


@dataclass
class Case:
    """What a hostile worker does, and what the daemon may do about it."""

    name: str
    # Called once before the first cycle (and, with `each_cycle`, before every cycle).
    act: Callable[[MailboxBench], None]
    each_cycle: bool = False
    # The heartbeat the worker writes before each cycle (default: a genuine, moving one).
    heartbeat: Callable[[MailboxBench], None] | None = None
    # The only pointer j1 may end with: "2-1" (unchanged) or a genuine checkpoint.
    pointer: str = "2-1"
    states: frozenset[str] = field(default_factory=lambda: frozenset({"running"}))
    cycles: int = 3


class MailboxBench:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.scratch = tmp / "scratch"
        self.folder = self.scratch / "alloc" / "a1"
        self.folder.mkdir(parents=True)
        self.storage_root = tmp / "storage"
        self.access = StorageAccess(url=self.storage_root.as_uri())
        self.objects = open_store(self.access)
        self.seq = 1
        self.refs: dict[str, CheckpointRef] = {}
        self.store: Any = None
        self.runner: ClusterRunner | None = None

    # -- setup ---------------------------------------------------------------------------
    async def start(self) -> None:
        from relaymd.state import AsyncStateStore

        for job, epoch, seq, step in (
            ("j1", 1, 1, 5),
            ("j1", 2, 1, 10),
            ("j1", 2, 2, 20),
            ("j1", 2, 3, 30),
            ("j2", 2, 5, 50),
        ):
            self.refs[f"{job}:{epoch}-{seq}"] = self.upload(job, epoch, seq, step)
        self.store = await AsyncStateStore.open(self.tmp / "state.sqlite")
        profile = ClusterProfile(
            name="c1",
            transport="local",
            scheduler="slurm",
            scratch=str(self.scratch),
            partitions=[
                Partition(
                    name="p1",
                    walltime_minutes=60,
                    gpus_per_allocation=0,
                    max_pending=1,
                    max_running=4,
                )
            ],
            native_worker=["worker"],
        )
        ctx = DaemonContext(
            store=self.store,
            object_store=self.objects,
            access=self.access,
            profiles={"c1": profile},
            settings=DaemonSettings(stale_after_s=STALE_AFTER_S),
            worker=WorkerSettings(),
            started_at=utcnow() - timedelta(hours=2),
        )
        transport = LocalTransport(profile)
        self.runner = ClusterRunner(
            ctx,
            profile,
            transport_factory=lambda *a, **k: transport,
            scheduler=QueueFileScheduler(self.scratch),
        )
        await self.store.insert_job(
            self.job("j1", JobState.RUNNING, self.refs["j1:2-1"], [self.refs["j1:1-1"]], "a1")
        )
        await self.store.insert_job(self.job("j2", JobState.HELD, self.refs["j2:2-5"], [], None))
        now = utcnow()
        await self.store.insert_allocation(
            Allocation(
                id="a1",
                cluster="c1",
                partition="p1",
                image="openmm",
                state=AllocationState.RUNNING,
                scheduler_id="100",
                walltime_s=3600,
                job_id="j1",
                started_at=now,
                seq_changed_at=now,
                last_seq=1,
            )
        )
        (self.scratch / "queue").write_text("a1 100 running\n")
        self.genuine_heartbeat()
        self.initial_j2 = self.job_row("j2")
        self.initial_manifests = self.manifests()

    def job(
        self,
        job_id: str,
        state: JobState,
        pointer: CheckpointRef,
        fallbacks: list[CheckpointRef],
        alloc: str | None,
    ) -> Job:
        return Job(
            id=job_id,
            spec=JobSpec(title=job_id, engine=OpenMMSettings(total_steps=TOTAL_STEPS)),
            state=state,
            epoch=2,
            bundle=ObjectRef(key=f"jobs/{job_id}/input/bundle.tar.gz", sha256="0" * 64, size=1),
            checkpoint=pointer,
            fallbacks=fallbacks,
            allocation_id=alloc,
            step=pointer.step,
        )

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.close()
        if self.store is not None:
            await self.store.close()

    # -- what a worker can do ------------------------------------------------------------
    def upload(self, job: str, epoch: int, seq: int, step: int) -> CheckpointRef:
        local = self.tmp / "local" / f"{job}-{epoch}-{seq}.bin"
        local.parent.mkdir(exist_ok=True)
        local.write_bytes(f"{job} {epoch} {seq} {step}\n".encode() * 8)
        return upload_checkpoint(
            self.objects,
            job_id=job,
            epoch=epoch,
            seq=seq,
            step=step,
            files=[("state.bin", local)],
            engine="openmm",
        )

    def append(self, data: bytes) -> None:
        with open(self.folder / "events.jsonl", "ab") as fh:
            fh.write(data)

    def event(self, kind: EventKind, **fields: Any) -> None:
        fields.setdefault("job_id", "j1")
        fields.setdefault("epoch", 2)
        fields.setdefault("allocation_id", "a1")
        self.append(WorkerEvent(kind=kind, **fields).model_dump_json().encode() + b"\n")

    def raw_event(self, fields: dict[str, Any]) -> None:
        """An event line built by hand (values pydantic would refuse to write)."""
        base: dict[str, Any] = {"kind": "checkpoint", "allocation_id": "a1", "job_id": "j1"}
        self.append(json.dumps({**base, "epoch": 2, **fields}).encode() + b"\n")

    def genuine_heartbeat(self) -> None:
        self.write_heartbeat(job_id="j1", epoch=2)

    def write_heartbeat(self, **fields: Any) -> None:
        self.seq += 1
        fields.setdefault("allocation_id", "a1")
        fields.setdefault("state", WorkerState.RUNNING)
        beat = Heartbeat(seq=self.seq, **fields)
        (self.folder / "heartbeat.json").write_text(beat.model_dump_json())

    # -- the daemon ----------------------------------------------------------------------
    async def age_liveness(self) -> None:
        """Move a1's last heard-from moment back past stale_after_s (the daemon's clock)."""
        alloc = await self.store.get_allocation("a1")
        if alloc is not None and alloc.state is not AllocationState.ENDED:
            past = utcnow() - timedelta(seconds=STALE_AFTER_S + 60)
            await self.store.update_allocation(
                alloc.model_copy(update={"seq_changed_at": past, "started_at": past})
            )

    async def run(self, case: Case) -> list[Any]:
        assert self.runner is not None
        reports = []
        case.act(self)
        for n in range(case.cycles):
            if n and case.each_cycle:
                case.act(self)
            (case.heartbeat or MailboxBench.genuine_heartbeat)(self)
            await self.age_liveness()
            reports.append(await self.runner.cycle())
        return reports

    # -- independent views ---------------------------------------------------------------
    def job_row(self, job_id: str) -> dict[str, Any]:
        with sqlite3.connect(self.tmp / "state.sqlite") as db:
            row = db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        assert row is not None, f"job {job_id} lost from the state file"
        return dict(json.loads(row[0]))

    def audit_kinds(self) -> list[str]:
        with sqlite3.connect(self.tmp / "state.sqlite") as db:
            return [k for (k,) in db.execute("SELECT kind FROM events ORDER BY id")]

    def manifests(self) -> set[str]:
        """`<job>:<epoch>-<seq>` of every checkpoint manifest in storage."""
        found = set()
        for path in (self.storage_root / "jobs").glob("*/checkpoints/*/manifest.json"):
            found.add(f"{path.parts[-4]}:{path.parent.name}")
        return found

    def pointer_proof(self, ref: dict[str, Any]) -> str:
        """`<epoch>-<seq>` of a pointer whose manifest, read from disk, proves it is j1's."""
        expected = f"jobs/j1/checkpoints/{ref['epoch']}-{ref['seq']}/"
        assert ref["prefix"] == expected, ref
        data = (self.storage_root / expected / "manifest.json").read_bytes()
        assert hashlib.sha256(data).hexdigest() == ref["manifest_sha256"], ref
        manifest = json.loads(data)
        for name in ("epoch", "seq", "step"):
            assert manifest[name] == ref[name], (name, manifest, ref)
        assert manifest["job_id"] == "j1"
        for item in manifest["files"]:
            content = (self.storage_root / expected / item["path"]).read_bytes()
            assert hashlib.sha256(content).hexdigest() == item["sha256"]
        return f"{ref['epoch']}-{ref['seq']}"
