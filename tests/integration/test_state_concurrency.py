"""Real processes writing the same state file at once: the daemon (async front-end) and two
CLI invocations (sync front-end). Nothing may fail with `database is locked`, no write may be
lost, and the shared job's epoch must count every increment exactly once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from relaymd.models import Job, JobSpec, JobState, ObjectRef, OpenMMSettings
from relaymd.state import SCHEMA_VERSION, StateStore

OPS = 300

_COMMON = """
import sys, time
from pathlib import Path
from relaymd.models import (
    Job, JobSpec, JobState, ObjectRef, OpenMMSettings, Segment, SegmentOutcome, ClusterStatus,
)

path, go, name, ops = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def job(job_id):
    return Job(
        id=job_id,
        spec=JobSpec(title=job_id, engine=OpenMMSettings(total_steps=10)),
        bundle=ObjectRef(key=f"jobs/{job_id}/input/bundle.tar.gz", sha256="a" * 64, size=1),
    )

while not go.exists():  # start together: every process opens the fresh file at once
    time.sleep(0.001)
"""

# The daemon: each cycle assigns one job and bumps the shared job, in one transaction.
_DAEMON = """
import asyncio
from relaymd.state import AsyncStateStore

async def advance(store, job_id):
    # The daemon's persist: the epoch moves on by a compare-and-set on the one it read.
    current = await store.get_job(job_id)
    moved = current.model_copy(update={"epoch": current.epoch + 1})
    return await store.update_job_at_epoch(moved, current.epoch)

async def main():
    store = await AsyncStateStore.open(path)
    try:
        for i in range(ops):
            async with store.transaction():
                await store.insert_job(job(f"{name}-{i}"))
                epoch = (await advance(store, f"{name}-{i}")).epoch
                await store.insert_segment(Segment(
                    job_id=f"{name}-{i}", epoch=epoch, allocation_id=f"a-{i}", cluster="c"))
                await advance(store, "shared")
                await store.add_event("assigned", f"{i}", job_id=f"{name}-{i}")
            await store.close_segment(f"{name}-{i}", epoch, SegmentOutcome.HANDOFF, i)
            current = await store.get_job(f"{name}-{i}")
            await store.update_job(current.model_copy(update={"state": JobState.RUNNING}))
            await store.upsert_cluster_status(ClusterStatus(name="c", running=i))
    finally:
        await store.close()

asyncio.run(main())
"""

# A CLI: submits, cancels, bumps the shared job, reads status; one operation at a time.
_CLI = """
from relaymd.state import SCHEMA_VERSION, StateStore

with StateStore.open(path) as store:
    for i in range(ops):
        store.insert_job(job(f"{name}-{i}"))
        store.add_event("submitted", f"{i}", job_id=f"{name}-{i}")
        with store.transaction():  # read and move the shared epoch in one write lock
            shared = store.get_job("shared")
            moved = shared.model_copy(update={"epoch": shared.epoch + 1})
            store.update_job_at_epoch(moved, shared.epoch)
        current = store.get_job(f"{name}-{i}")
        store.update_job(current.model_copy(update={"state": JobState.CANCELLED}))
        store.set_cluster_enabled(name, i % 2 == 0)
        store.status_summary()
"""


def _script(tmp_path: Path, name: str, body: str) -> Path:
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(_COMMON) + textwrap.dedent(body))
    return script


def test_daemon_and_cli_processes_write_the_same_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.sqlite"
    with StateStore.open(path) as store:  # the shared row all processes increment
        store.insert_job(
            Job(
                id="shared",
                spec=JobSpec(title="shared", engine=OpenMMSettings(total_steps=10)),
                bundle=ObjectRef(key="jobs/shared/input/bundle.tar.gz", sha256="a" * 64, size=1),
            )
        )
    go = tmp_path / "go"
    roles = {"daemon": _DAEMON, "cli1": _CLI, "cli2": _CLI}
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                str(_script(tmp_path, name, body)),
                str(path),
                str(go),
                name,
                str(OPS),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, body in roles.items()
    }
    time.sleep(0.5)  # let every interpreter import and reach the start line
    go.touch()
    outputs = {name: proc.communicate(timeout=300) for name, proc in procs.items()}
    for name, proc in procs.items():
        _, err = outputs[name]
        assert "database is locked" not in err, f"{name}: {err}"
        assert proc.returncode == 0, f"{name} exited {proc.returncode}: {err}"

    with StateStore.open(path) as store:
        counts = store.count_jobs_by_state()
        assert counts[JobState.RUNNING] == OPS
        assert counts[JobState.CANCELLED] == 2 * OPS
        assert sum(counts.values()) == 3 * OPS + 1
        shared = store.get_job("shared")
        assert shared is not None
        assert shared.epoch == 3 * OPS  # every increment counted once, none lost
        for i in range(OPS):
            job = store.get_job(f"daemon-{i}")
            assert job is not None
            assert (job.epoch, job.state) == (1, JobState.RUNNING)
            [segment] = store.list_segments(f"daemon-{i}")
            assert (segment.end_step, segment.allocation_id) == (i, f"a-{i}")
            for cli in ("cli1", "cli2"):
                assert store.get_job(f"{cli}-{i}") is not None
        assert len(store.list_events(limit=10 * OPS)) == 3 * OPS
        clusters = {c.name: c for c in store.list_cluster_status()}
        assert set(clusters) == {"c", "cli1", "cli2"}
        assert clusters["c"].running == OPS - 1
        assert clusters["cli1"].enabled is ((OPS - 1) % 2 == 0)


_OPENER = """
from relaymd.state import SCHEMA_VERSION, StateStore

with StateStore.open(path) as store:
    for i in range(ops):
        store.insert_job(job(f"{name}-{i}"))
"""


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "state.sqlite"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(_script(tmp_path, f"o{n}", _OPENER)),
                str(path),
                str(go),
                f"o{n}",
                "5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    time.sleep(0.5)
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with StateStore.open(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert sum(store.count_jobs_by_state().values()) == 20
