"""Failover time: from an allocation's death to its job running again on an idle allocation.

Simulated with fakes on a simulated clock (freezegun), so the numbers are in poll and
heartbeat intervals, not seconds of this machine: the real ClusterRunner (real read/write
scripts, real SLURM parser, real decisions, real SQLite) and the real adaptive-interval rule
drive a fake cluster with two allocations: `a1` runs the job, `a2` is an idle worker. Fake
workers beat every H seconds and start an assignment as soon as it is written (a real worker
polls its mailbox every 0.5 s, small against H).

* death reported by SLURM: a1 leaves squeue and sacct says NODE_FAIL. Target < 2 poll
  intervals (the interval in effect when it died).
* silent hang: a1 stays RUNNING in squeue but its heartbeat seq stops (the shipped
  daemon.stale_after_s). Target < 3 heartbeat intervals.

Each scenario runs with the death at several phases of the poll interval; the worst is kept.

    .venv/bin/python -m bench.failover
"""

from __future__ import annotations

import asyncio
import base64
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from freezegun import freeze_time

from bench._docs import write_section
from relaymd.daemon.interval import next_interval
from relaymd.daemon.runner import ClusterRunner
from relaymd.logging import configure
from relaymd.mailbox.models import Assignment, Heartbeat, WorkerState
from relaymd.models import (
    Allocation,
    AllocationState,
    ClusterProfile,
    DaemonSettings,
    Job,
    JobSpec,
    JobState,
    ObjectRef,
    OpenMMSettings,
    Partition,
    PollSettings,
    Segment,
    WorkerSettings,
)
from relaymd.scheduler import make_scheduler
from relaymd.scheduler.slurm_parse import SACCT_MARK, SQUEUE_MARK
from tests.support.fake_cluster import (
    READ_CALL,
    FakeLoginNode,
    SyntheticTransport,
    open_daemon_context,
)

H = 30.0  # heartbeat interval
POLL = PollSettings(min_interval_s=5.0, max_interval_s=60.0)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
_WRITE = re.compile(r"^w (\S+) (\S+) \S+ (\S*)$", re.MULTILINE)


class SimWorker:
    def __init__(self, alloc_id: str, sched_id: str, job: Job | None) -> None:
        self.alloc_id = alloc_id
        self.sched_id = sched_id
        self.job_id = job.id if job else None
        self.epoch = job.epoch if job else None
        self.died_at: float | None = None
        self.hung_at: float | None = None
        self.end_state: str | None = None
        self.started_job_at: float | None = None

    def alive(self, t: float) -> bool:
        return self.died_at is None or t < self.died_at

    def seq(self, t: float) -> int:
        frozen = t if self.hung_at is None else min(t, self.hung_at)
        return int(frozen // H) + 1

    def heartbeat(self, t: float) -> Heartbeat:
        state = WorkerState.RUNNING if self.job_id else WorkerState.IDLE
        return Heartbeat(
            allocation_id=self.alloc_id,
            seq=self.seq(t),
            state=state,
            job_id=self.job_id,
            epoch=self.epoch,
        )


class SimCluster(FakeLoginNode):
    def __init__(self, workers: list[SimWorker]) -> None:
        self.workers = {w.alloc_id: w for w in workers}
        self.t = 0.0

    def write(self, script: str) -> None:
        for alloc_id, name, payload in _WRITE.findall(script):
            worker = self.workers.get(alloc_id)
            if name == "assignment.json" and worker and worker.alive(self.t) and not worker.hung_at:
                a = Assignment.model_validate_json(base64.b64decode(payload))
                if (a.job_id, a.epoch) != (worker.job_id, worker.epoch):
                    worker.job_id, worker.epoch = a.job_id, a.epoch
                    worker.started_job_at = self.t

    def read(self, script: str, mark: str) -> str:
        out = [f"{mark} QUERY", SQUEUE_MARK]
        for w in self.workers.values():
            if w.alive(self.t):
                out.append(f"{w.sched_id}|relaymd-{w.alloc_id}|RUNNING|None|node1")
        out += [SACCT_MARK, "JobID|JobName|State|ExitCode|NodeList|Reason"]
        for w in self.workers.values():
            if not w.alive(self.t):
                out.append(f"{w.sched_id}|relaymd-{w.alloc_id}|{w.end_state}|0:0|node1|None")
        out += ["", f"{mark} QUERY_RC 0", ""]
        for alloc_id, _off, _log in READ_CALL.findall(script):
            w = self.workers[alloc_id]
            out.append(f"{mark} HB {alloc_id}")
            if w.alive(self.t):
                out.append(
                    base64.b64encode(w.heartbeat(self.t).model_dump_json().encode()).decode()
                )
            else:
                out.append("")
            out += [f"{mark} EV {alloc_id}", ""]
        out.append(f"{mark} END")
        return "\n".join(out) + "\n"


async def trial(kind: str, phase: float) -> tuple[float, float]:
    """(recovery seconds, poll interval in effect at the failure)."""
    tmp = Path(tempfile.mkdtemp(prefix="relaymd-failover-"))
    profile = ClusterProfile(
        name="c1",
        transport="ssh",
        ssh={"host": "login"},
        scheduler="slurm",
        scratch="$SCRATCH/relaymd",
        poll=POLL,
        images={"openmm": {"sif": "/sw/openmm.sif"}},
        partitions=[Partition(name="gpu", walltime_minutes=240, max_pending=0)],
    )
    settings = DaemonSettings(stop_grace_s=120)  # the shipped stale_after_s
    worker_settings = WorkerSettings(heartbeat_interval_s=H)
    ctx = await open_daemon_context(
        tmp,
        {"c1": profile},
        settings=settings,
        worker=worker_settings,
        started_at=T0,  # on the simulated clock, so staleness counts from the start
    )
    store = ctx.store
    spec = JobSpec(title="failover", engine=OpenMMSettings(total_steps=10**7))
    bundle = ObjectRef(key="jobs/j1/input/bundle.tar.gz", sha256="0" * 64, size=1)
    job = Job(
        id="j1", spec=spec, state=JobState.RUNNING, epoch=1, bundle=bundle, allocation_id="a1"
    )
    await store.insert_job(job)
    await store.insert_segment(Segment(job_id="j1", epoch=1, allocation_id="a1", cluster="c1"))
    for alloc_id, sched, bound in (("a1", "101", "j1"), ("a2", "102", None)):
        await store.insert_allocation(
            Allocation(
                id=alloc_id,
                cluster="c1",
                partition="gpu",
                image="openmm",
                state=AllocationState.RUNNING,
                scheduler_id=sched,
                walltime_s=14400,
                job_id=bound,
                started_at=T0,
            )
        )
    a1 = SimWorker("a1", "101", job)
    a2 = SimWorker("a2", "102", None)
    cluster = SimCluster([a1, a2])
    transport = SyntheticTransport(cluster)
    runner = ClusterRunner(
        ctx, profile, transport_factory=lambda *a, **k: transport, scheduler=make_scheduler(profile)
    )
    t = 0.0
    fail_at: float | None = None
    interval_at_fail = 0.0
    warmup = 300.0  # quiet running: the interval backs off to its busy cap first
    with freeze_time(T0) as clock:
        while t < warmup + 600:
            if fail_at is None and t + runner.interval > warmup:
                fail_at = t + phase * runner.interval
                interval_at_fail = runner.interval
                if kind == "slurm":
                    # The death happens between polls: a1 leaves squeue from the first poll
                    # at or after `fail_at` (the simulator answers as of `cluster.t`).
                    a1.died_at, a1.end_state = fail_at, "NODE_FAIL"
                else:
                    a1.hung_at = fail_at
            clock.move_to(T0 + timedelta(seconds=t))
            cluster.t = t
            report = await runner.cycle()
            if a2.started_job_at is not None:
                break
            runner.interval = next_interval(
                runner.interval,
                POLL,
                changed=report.changed,
                busy=report.busy,
                busy_cap=H,
                failed=not report.ok,
            )
            t += runner.interval
    await store.close()
    if a2.started_job_at is None or fail_at is None:
        raise SystemExit(f"{kind}: the job never moved to the idle allocation")
    return a2.started_job_at - fail_at, interval_at_fail


async def main() -> str:
    configure(level="CRITICAL")
    phases = [0.05, 0.25, 0.5, 0.75, 0.95]
    slurm = [await trial("slurm", p) for p in phases]
    hang = [await trial("hang", p) for p in phases]
    worst_slurm = max(s / i for s, i in slurm)
    worst_hang = max(s for s, _ in hang) / H
    interval = slurm[0][1]
    return "\n".join(
        [
            "## Failover time (`bench/failover.py`)",
            "",
            f"Simulated clock; fake cluster and workers, real daemon cycle. Heartbeat interval"
            f" H = {H:.0f} s, stale after {DaemonSettings().stale_after_s:.0f} s (shipped"
            f" default), poll {POLL.min_interval_s:.0f}-"
            f"{POLL.max_interval_s:.0f} s (capped at H while workers run; {interval:.0f} s in"
            f" effect at the failure). Failure at {len(phases)} phases of the poll interval;"
            " worst case shown.",
            "",
            "| failure | worst time to running again | target |",
            "|---|---|---|",
            f"| death reported by SLURM (NODE_FAIL) | {worst_slurm:.2f} poll intervals"
            f" ({max(s for s, _ in slurm):.0f} s) | < 2 poll intervals |",
            f"| silent hang (heartbeat seq stops) | {worst_hang:.2f} heartbeat intervals"
            f" ({max(s for s, _ in hang):.0f} s) | < 3 heartbeat intervals |",
        ]
    )


if __name__ == "__main__":
    body = asyncio.run(main())
    print(body)
    write_section("failover", body)
