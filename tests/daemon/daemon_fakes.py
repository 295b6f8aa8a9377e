"""A recording transport (the real local one, keeping each script) and a fake
scheduler whose queue is a text file on the "cluster": enough to exercise the real read and
write scripts without SLURM. `make_fake_runners` wires both into real cluster runners."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from daemon_factories import make_sched_job

from relaymd.daemon.context import DaemonContext
from relaymd.daemon.runner import ClusterRunner
from relaymd.models import ClusterProfile, DaemonSettings, StorageAccess, WorkerSettings
from relaymd.scheduler.base import SchedulerJob
from relaymd.transport import CommandResult, LocalTransport


class BashTransport(LocalTransport):
    """The real local transport, keeping every script it was given (tests read and count)."""

    def __init__(self, profile: ClusterProfile) -> None:
        super().__init__(profile)
        self.scripts: list[str] = []

    async def run(self, script: str, *, timeout: float | None = None) -> CommandResult:  # noqa: ASYNC109
        self.scripts.append(script)
        return await super().run(script, timeout=timeout)


class FileQueueScheduler:
    """Queue lines `<allocation id> <scheduler id> <phase> [end state]` in `<scratch>/queue`
    (the scratch folder is created if missing)."""

    def __init__(self, scratch: Path) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        self.queue = scratch / "queue"

    def query_snippet(self, profile: Any, ended_ids: list[str]) -> str:
        return f"cat {shlex.quote(str(self.queue))} 2>/dev/null; true"

    def parse_query(self, text: str) -> list[SchedulerJob]:
        jobs = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3:
                end = parts[3] if len(parts) > 3 else None
                jobs.append(make_sched_job(parts[0], parts[2], end, sid=parts[1]))
        return jobs

    def render_job_script(self, alloc: Any, profile: Any, worker_args: list[str]) -> str:
        return "#!/bin/bash\nexec worker " + " ".join(shlex.quote(a) for a in worker_args) + "\n"

    def submit_snippet(self, alloc: Any, script_path: str) -> str:
        q = shlex.quote(str(self.queue))
        return (
            f"n=$(( $(wc -l < {q} 2>/dev/null || echo 0) + 1000 )); "
            f"echo {alloc.id} $n pending >> {q}; echo SUBMITTED {alloc.id} $n"
        )

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
        q = shlex.quote(str(self.queue))
        pattern = "|".join(ids)
        return f"grep -Ev ' ({pattern}) ' {q} > {q}.new; mv {q}.new {q}"


@dataclass
class FakeRunners:
    store: Any
    ctx: DaemonContext
    runners: dict[str, ClusterRunner]
    transports: dict[str, BashTransport]


async def make_fake_runners(tmp_path: Path, profiles: dict[str, ClusterProfile]) -> FakeRunners:
    """One store and DaemonContext under `tmp_path`, and per profile a ClusterRunner with its
    own BashTransport and a FileQueueScheduler in the profile's scratch."""
    from relaymd.state import AsyncStateStore
    from relaymd.storage import open_store

    store = await AsyncStateStore.open(tmp_path / "state.sqlite")
    access = StorageAccess(url=(tmp_path / "storage").as_uri())
    ctx = DaemonContext(
        store=store,
        object_store=open_store(access),
        access=access,
        profiles=profiles,
        settings=DaemonSettings(),
        worker=WorkerSettings(),
    )
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
    return FakeRunners(store=store, ctx=ctx, runners=runners, transports=transports)
