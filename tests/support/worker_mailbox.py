"""A worker's side of allocation a1's mailbox, written by hand, and the daemon's results read
back from outside: the state file with plain sqlite3 (the trust and mailbox-campaign tests).

Job j1 runs at epoch 2 on a1 (scheduler id 100, cluster c1, partition p1); what the worker
writes goes to `<tmp>/scratch/alloc/a1`, its checkpoints to the file:// store at
`<tmp>/storage`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from relaymd.mailbox.models import EventKind, WorkerEvent
from relaymd.models import Allocation, AllocationState, CheckpointRef, utcnow
from relaymd.storage.checkpoints import upload_checkpoint


class WorkerMailbox:
    def __init__(self, tmp: Path, objects: Any) -> None:
        self.tmp = tmp
        self.scratch = tmp / "scratch"
        self.folder = self.scratch / "alloc" / "a1"
        self.folder.mkdir(parents=True)
        self.storage_root = tmp / "storage"
        self.objects = objects
        self.seq = 1

    # -- what a worker can do ------------------------------------------------------------
    def upload_state(
        self, job: str, epoch: int, seq: int, step: int, content: bytes
    ) -> CheckpointRef:
        """A genuine checkpoint of `job` holding one file, state.bin, with `content`."""
        local = self.tmp / "local" / f"{job}-{epoch}-{seq}.bin"
        local.parent.mkdir(exist_ok=True)
        local.write_bytes(content)
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

    def queue(self, line: str) -> None:
        """The scheduler's whole view (tests.support.fake_cluster.FileQueueScheduler)."""
        (self.scratch / "queue").write_text(line + "\n")

    async def insert_running_a1(self, store: Any) -> None:
        """Allocation a1 running j1 since now, as the daemon recorded it and as SLURM shows it."""
        now = utcnow()
        await store.insert_allocation(
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
        self.queue("a1 100 running")

    # -- independent views ---------------------------------------------------------------
    def job_row(self, job_id: str = "j1") -> dict[str, Any]:
        with sqlite3.connect(self.tmp / "state.sqlite") as db:
            row = db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        assert row is not None, f"job {job_id} lost from the state file"
        return dict(json.loads(row[0]))

    def audits(self) -> list[tuple[str, str]]:
        """(kind, message) of every audit event, oldest first."""
        with sqlite3.connect(self.tmp / "state.sqlite") as db:
            rows = db.execute("SELECT kind, data FROM events ORDER BY id").fetchall()
        return [(kind, json.loads(data).get("message", "")) for kind, data in rows]
