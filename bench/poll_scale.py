"""Daemon cost per poll at scale: 1 000 allocations over 5 clusters.

Fake transports answer the daemon's real batched read script with synthetic output of the
real size (squeue lines in SLURM's format, a heartbeat per allocation, new event lines), so
what is measured is the daemon's own work: building the scripts, parsing the output with the
real SLURM parser, and deciding. The state store is a real SQLite file.

Measures, per cluster per cycle: SSH round trips (transport.round_trips) and CPU time
(time.process_time around parse + decide). Targets: <= 2 round trips, < 200 ms CPU per cycle.

    .venv/bin/python -m bench.poll_scale [--clusters 5] [--allocations 1000] [--cycles 5]
    .venv/bin/python -m bench.poll_scale --login-node  # the login node's side, real files
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
from pathlib import Path

from bench._docs import write_section
from relaymd.daemon.runner import ClusterRunner
from relaymd.logging import configure
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.models import (
    Allocation,
    AllocationState,
    ClusterProfile,
    Job,
    JobSpec,
    JobState,
    ObjectRef,
    OpenMMSettings,
    Partition,
)
from relaymd.scheduler import make_scheduler
from relaymd.scheduler.slurm_parse import SQUEUE_MARK
from tests.support.fake_cluster import (
    READ_CALL,
    FakeLoginNode,
    SyntheticTransport,
    open_daemon_context,
)


class SyntheticCluster(FakeLoginNode):
    """What a login node would print for the daemon's scripts, for `allocs` running workers."""

    def __init__(self, allocs: list[Allocation], jobs: dict[str, Job]) -> None:
        self.allocs = {a.id: a for a in allocs}
        self.jobs = jobs
        self.cycle = 0
        self.events: dict[str, bytes] = {a.id: b"" for a in allocs}
        self.bytes_out = 0

    def advance(self) -> None:
        """Every worker beats; one in ten appends an event line."""
        self.cycle += 1
        for i, alloc in enumerate(self.allocs.values()):
            if (i + self.cycle) % 10 == 0:
                job = self.jobs[alloc.job_id or ""]
                event = WorkerEvent(
                    kind=EventKind.STARTED, allocation_id=alloc.id, job_id=job.id, epoch=job.epoch
                )
                self.events[alloc.id] += event.model_dump_json().encode() + b"\n"

    def read(self, script: str, mark: str) -> str:
        out = [f"{mark} QUERY", SQUEUE_MARK]
        for n, alloc in enumerate(self.allocs.values()):
            out.append(f"{1000 + n}|relaymd-{alloc.id}|RUNNING|None|node{n % 64}")
        out += ["", f"{mark} QUERY_RC 0", ""]
        for alloc_id, offset, _log in READ_CALL.findall(script):
            alloc = self.allocs[alloc_id]
            job = self.jobs[alloc.job_id or ""]
            beat = Heartbeat(
                allocation_id=alloc_id,
                seq=self.cycle,
                state=WorkerState.RUNNING,
                job_id=job.id,
                epoch=job.epoch,
                step=self.cycle * 1000,
                total_steps=10**7,
                ns_per_day=100.0 + self.cycle,
                hostname="node",
                pid=4242,
            )
            out.append(f"{mark} HB {alloc_id}")
            out.append(base64.b64encode(beat.model_dump_json().encode()).decode())
            out.append(f"{mark} EV {alloc_id}")
            out.append(base64.b64encode(self.events[alloc_id][int(offset) :]).decode())
        out.append(f"{mark} END")
        text = "\n".join(out) + "\n"
        self.bytes_out = len(text)
        return text


async def main(n_clusters: int, n_allocs: int, cycles: int) -> list[dict[str, float]]:
    configure(level="ERROR")
    tmp = Path(tempfile.mkdtemp(prefix="relaymd-bench-"))
    profiles = {
        f"c{c}": ClusterProfile(
            name=f"c{c}",
            transport="ssh",
            ssh={"host": f"login{c}"},
            scheduler="slurm",
            scratch="$SCRATCH/relaymd",
            partitions=[Partition(name="gpu", walltime_minutes=240, max_running=1000)],
            images={"openmm": {"sif": "/sw/openmm.sif"}},
        )
        for c in range(n_clusters)
    }
    ctx = await open_daemon_context(tmp, profiles)
    store = ctx.store
    per_cluster = n_allocs // n_clusters
    runners: list[tuple[ClusterRunner, SyntheticCluster]] = []
    spec = JobSpec(title="bench", engine=OpenMMSettings(total_steps=10**7))
    bundle = ObjectRef(key="jobs/x/input/bundle.tar.gz", sha256="0" * 64, size=1)
    async with store.transaction():
        for name, profile in profiles.items():
            allocs, jobs = [], {}
            for i in range(per_cluster):
                job = Job(
                    id=f"j{name}x{i:05d}",
                    spec=spec,
                    state=JobState.RUNNING,
                    epoch=1,
                    bundle=bundle,
                    allocation_id=f"a{name}x{i:05d}",
                )
                alloc = Allocation(
                    id=f"a{name}x{i:05d}",
                    cluster=name,
                    partition="gpu",
                    image="openmm",
                    state=AllocationState.RUNNING,
                    scheduler_id=str(1000 + i),
                    walltime_s=14400,
                    job_id=job.id,
                )
                await store.insert_job(job)
                await store.insert_allocation(alloc)
                allocs.append(alloc)
                jobs[job.id] = job
            cluster = SyntheticCluster(allocs, jobs)
            transport = SyntheticTransport(cluster)
            runner = ClusterRunner(
                ctx,
                profile,
                transport_factory=lambda *a, t=transport, **k: t,
                scheduler=make_scheduler(profile),
            )
            runners.append((runner, cluster))
    rows: list[dict[str, float]] = []
    for cycle in range(cycles):
        for runner, cluster in runners:
            cluster.advance()
            report = await runner.cycle()
            if not report.ok:
                raise SystemExit(f"cycle failed: {report.error}")
            rows.append(
                {
                    "cycle": cycle,
                    "round_trips": report.round_trips,
                    "cpu_ms": report.decide_cpu_s * 1000,
                    "read_bytes": cluster.bytes_out,
                }
            )
    await store.close()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clusters", type=int, default=5)
    parser.add_argument("--allocations", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument(
        "--login-node",
        action="store_true",
        help="instead: the real read script against real folders (bench/login_node.py)",
    )
    parser.add_argument("--after-sizes", default="200,1000,2000,10000")
    parser.add_argument("--before-sizes", default="200,1000,2000")
    args = parser.parse_args()
    if args.login_node:
        from bench import login_node

        sizes = [int(v) for v in args.after_sizes.split(",") if v]
        before = [int(v) for v in args.before_sizes.split(",") if v]
        text = login_node.main(sizes, before)
        print(text)
        write_section("poll_login_node", text)
        raise SystemExit(0)
    rows = asyncio.run(main(args.clusters, args.allocations, args.cycles))
    cpu = [r["cpu_ms"] for r in rows]
    per_cycle = [sum(r["cpu_ms"] for r in rows if r["cycle"] == c) for c in range(args.cycles)]
    trips = max(int(r["round_trips"]) for r in rows)
    body = "\n".join(
        [
            "## Poll cost at scale (`bench/poll_scale.py`)",
            "",
            f"{args.allocations} running allocations over {args.clusters} clusters"
            f" ({args.allocations // args.clusters} each), {args.cycles} cycles; fake transports"
            " answer the real read script with synthetic squeue/heartbeat/event output; real"
            " SLURM parser, real decisions, real SQLite.",
            "",
            "| metric | value | target |",
            "|---|---|---|",
            f"| SSH round trips per cluster per cycle (max) | {trips} | <= 2 |",
            f"| CPU per cluster-cycle, parse + decide (median / max) | {statistics.median(cpu):.1f}"
            f" / {max(cpu):.1f} ms | |",
            f"| CPU per cycle over all {args.clusters} clusters (median / max) |"
            f" {statistics.median(per_cycle):.1f} / {max(per_cycle):.1f} ms | < 200 ms |",
            f"| read output per cluster per cycle | {rows[-1]['read_bytes'] / 1024:.0f} KiB | |",
        ]
    )
    print(body)
    write_section("poll_scale", body)
