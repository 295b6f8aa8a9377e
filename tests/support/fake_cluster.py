"""The fake login node and what plugs it into real cluster runners.

Two ways to stand in for a cluster's login node, one of each:

* `FakeLoginNode` answers the daemon's read and write scripts in Python, in the format its
  output parser expects, without running them (`SyntheticTransport` carries them): for
  benchmarks at a scale no machine could host (bench/poll_scale.py, bench/failover.py).
* `BashTransport` runs them with the real local bash against real folders, and
  `FileQueueScheduler` is the scheduler's queue kept as a text file in scratch: the real read
  and write scripts without SLURM.

`make_fake_runners` wires a real SQLite state file and a file:// object store into real
cluster runners over either.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from relaymd.daemon.context import DaemonContext
from relaymd.daemon.runner import ClusterRunner
from relaymd.models import (
    ClusterProfile,
    DaemonSettings,
    Partition,
    StorageAccess,
    WorkerSettings,
)
from relaymd.scheduler.base import EndState, SchedulerJob, SchedulerPhase, SubmitResult
from relaymd.transport import CommandResult, LocalTransport

# One line per allocation in a read script: `r <allocation id> <event offset> <want log>`.
READ_CALL = re.compile(r"^r (\S+) (\d+) (\d)(?: \d)?$", re.MULTILINE)


class FakeLoginNode:
    """Answers the daemon's scripts the way its output parser expects.

    Subclasses print a read script's sections (`read`) and act on a write script (`write`).
    """

    def answer(self, script: str) -> str:
        token = script.split("\nT=", 1)[1].split("\n", 1)[0]
        mark = f"@@{token}"
        if "\nr() {" not in script:  # a write script: nothing to report but its end
            self.write(script)
            return f"{mark} SUBMIT\n\n{mark} END\n"
        return self.read(script, mark)

    def write(self, script: str) -> None:
        return None

    def read(self, script: str, mark: str) -> str:
        raise NotImplementedError


class SyntheticTransport:
    """A transport whose every script is answered by a `FakeLoginNode`, counting round trips."""

    def __init__(self, cluster: FakeLoginNode) -> None:
        self.cluster = cluster
        self.round_trips = 0

    async def run(self, script: str, *, timeout: float | None = None) -> CommandResult:  # noqa: ASYNC109
        self.round_trips += 1
        return CommandResult(exit_status=0, stdout=self.cluster.answer(script), stderr="")

    async def close(self) -> None:
        return None


class BashTransport(LocalTransport):
    """The real local transport, keeping every script it was given (tests read and count).

    With `env`, scripts run with exactly that environment instead of the daemon's (a bench
    puts a login node's tools, e.g. a stand-in `squeue`, first on PATH); `keep_scripts=False`
    keeps only their number (a long bench would hold every script in memory)."""

    def __init__(
        self,
        profile: ClusterProfile,
        *,
        env: dict[str, str] | None = None,
        keep_scripts: bool = True,
    ) -> None:
        super().__init__(profile)
        self.scripts: list[str] = []
        self.env = env
        self.keep_scripts = keep_scripts

    async def run(self, script: str, *, timeout: float | None = None) -> CommandResult:  # noqa: ASYNC109
        if self.keep_scripts:
            self.scripts.append(script)
        return await super().run(script, timeout=timeout)

    def environment(self) -> dict[str, str]:
        return dict(self.env) if self.env is not None else super().environment()


def parse_queue(text: str) -> list[SchedulerJob]:
    """The scheduler's view from queue lines `<allocation> <scheduler id> <phase> [end state]`."""
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


def parse_submitted(text: str) -> list[SubmitResult]:
    """One result per `SUBMITTED <allocation> <scheduler id>` line."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "SUBMITTED":
            out.append(SubmitResult(allocation_id=parts[1], scheduler_id=parts[2]))
    return out


class FileQueueScheduler:
    """Queue lines `<allocation id> <scheduler id> <phase> [end state]` in `<scratch>/queue`
    (the scratch folder is created if missing)."""

    def __init__(self, scratch: Path) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        self.queue = scratch / "queue"

    def query_snippet(self, profile: Any, ended_ids: list[str]) -> str:
        return f"cat {shlex.quote(str(self.queue))} 2>/dev/null; true"

    def parse_query(self, text: str) -> list[SchedulerJob]:
        return parse_queue(text)

    def render_job_script(self, alloc: Any, profile: Any, worker_args: list[str]) -> str:
        return "#!/bin/bash\nexec worker " + " ".join(shlex.quote(a) for a in worker_args) + "\n"

    def submit_snippet(self, alloc: Any, script_path: str) -> str:
        q = shlex.quote(str(self.queue))
        return (
            f"n=$(( $(wc -l < {q} 2>/dev/null || echo 0) + 1000 )); "
            f"echo {alloc.scheduler_key} $n pending >> {q}; echo SUBMITTED {alloc.id} $n"
        )

    def parse_submit(self, text: str) -> list[SubmitResult]:
        return parse_submitted(text)

    def cancel_snippet(self, ids: list[str]) -> str:
        q = shlex.quote(str(self.queue))
        pattern = "|".join(ids)
        return f"grep -Ev ' ({pattern}) ' {q} > {q}.new; mv {q}.new {q}"


def local_profile(name: str, scratch: Path, **partition: Any) -> ClusterProfile:
    """Cluster `name` on this machine read with the SLURM parser: one GPU-less partition p1
    (60 minutes unless `partition` says otherwise) and a native worker."""
    return ClusterProfile(
        name=name,
        transport="local",
        scheduler="slurm",
        scratch=str(scratch),
        partitions=[
            Partition(
                **{"name": "p1", "walltime_minutes": 60, "gpus_per_allocation": 0, **partition}
            )
        ],
        native_worker=["worker"],
    )


async def open_daemon_context(
    root: Path,
    profiles: dict[str, ClusterProfile],
    *,
    settings: DaemonSettings | None = None,
    worker: WorkerSettings | None = None,
    started_at: datetime | None = None,
) -> DaemonContext:
    """The daemon's context over a real SQLite file and a file:// store, both under `root`."""
    from relaymd.state import AsyncStateStore
    from relaymd.storage import open_store

    store = await AsyncStateStore.open(root / "state.sqlite")
    access = StorageAccess(url=(root / "storage").as_uri())
    return DaemonContext(
        store=store,
        object_store=open_store(access),
        access=access,
        profiles=profiles,
        settings=settings or DaemonSettings(),
        worker=worker or WorkerSettings(),
        started_at=started_at,
    )


@dataclass
class FakeRunners:
    store: Any
    ctx: DaemonContext
    runners: dict[str, ClusterRunner]
    transports: dict[str, BashTransport]


async def make_fake_runners(
    tmp_path: Path,
    profiles: dict[str, ClusterProfile],
    *,
    settings: DaemonSettings | None = None,
    started_at: datetime | None = None,
) -> FakeRunners:
    """One store and DaemonContext under `tmp_path`, and per profile a ClusterRunner with its
    own BashTransport and a FileQueueScheduler in the profile's scratch."""
    ctx = await open_daemon_context(tmp_path, profiles, settings=settings, started_at=started_at)
    runners: dict[str, ClusterRunner] = {}
    transports: dict[str, BashTransport] = {}
    for name, profile in profiles.items():
        transport = transports[name] = BashTransport(profile)
        runners[name] = ClusterRunner(
            ctx,
            profile,
            transport_factory=lambda *a, transport=transport, **k: transport,
            scheduler=FileQueueScheduler(Path(profile.scratch)),
        )
    return FakeRunners(store=ctx.store, ctx=ctx, runners=runners, transports=transports)
