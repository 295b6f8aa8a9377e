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
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from relaymd.daemon.runner import ClusterRunner
from relaymd.mailbox.models import Heartbeat, WorkerState
from relaymd.models import (
    AllocationState,
    CheckpointRef,
    DaemonSettings,
    Job,
    JobSpec,
    JobState,
    ObjectRef,
    OpenMMSettings,
    StorageAccess,
    utcnow,
)
from relaymd.storage import open_store
from tests.support.fake_cluster import local_profile, make_fake_runners
from tests.support.worker_mailbox import WorkerMailbox

STALE_AFTER_S = 300.0
TOTAL_STEPS = 100


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


class MailboxBench(WorkerMailbox):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, open_store(StorageAccess(url=(tmp / "storage").as_uri())))
        self.refs: dict[str, CheckpointRef] = {}
        self.store: Any = None
        self.runner: ClusterRunner | None = None

    # -- setup ---------------------------------------------------------------------------
    async def start(self) -> None:
        for job, epoch, seq, step in (
            ("j1", 1, 1, 5),
            ("j1", 2, 1, 10),
            ("j1", 2, 2, 20),
            ("j1", 2, 3, 30),
            ("j2", 2, 5, 50),
        ):
            self.refs[f"{job}:{epoch}-{seq}"] = self.upload(job, epoch, seq, step)
        profile = local_profile("c1", self.scratch, max_pending=1, max_running=4)
        fake = await make_fake_runners(
            self.tmp,
            {"c1": profile},
            settings=DaemonSettings(stale_after_s=STALE_AFTER_S),
            started_at=utcnow() - timedelta(hours=2),
        )
        self.store, self.runner = fake.store, fake.runners["c1"]
        await self.store.insert_job(
            self.job("j1", JobState.RUNNING, self.refs["j1:2-1"], [self.refs["j1:1-1"]], "a1")
        )
        await self.store.insert_job(self.job("j2", JobState.HELD, self.refs["j2:2-5"], [], None))
        await self.insert_running_a1(self.store)
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
        content = f"{job} {epoch} {seq} {step}\n".encode() * 8
        return self.upload_state(job, epoch, seq, step, content)

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
