"""How fast `relaymd status` reads the state store when it holds 100 000 jobs.

Fills a temporary database (jobs in every state, allocations on three clusters, relay
segments, audit events), then times `status_summary()` and the other reads a status or list
command makes, over repeated runs. Prints a markdown table and replaces this benchmark's
section of docs/benchmarks.md (between its markers).

    .venv/bin/python bench/status_scale.py [--jobs 100000] [--repeat 30] [--no-docs]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel

from relaymd.ids import new_allocation_id, new_job_id
from relaymd.models import (
    Allocation,
    AllocationState,
    ClusterReachability,
    ClusterStatus,
    DaemonStatus,
    Job,
    JobSpec,
    JobState,
    ObjectRef,
    OpenMMSettings,
    Segment,
    SegmentOutcome,
)
from relaymd.state import AsyncStateStore, StateStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import DOCS, write_section  # a sibling module; bench/ is not a package

TARGET_MS = 150.0
CLUSTERS = ("clusterA", "clusterB", "preempt")
# Roughly a long-lived installation: most jobs finished, a few thousand in flight.
STATE_WEIGHTS = {
    JobState.COMPLETED: 0.78,
    JobState.FAILED: 0.04,
    JobState.CANCELLED: 0.03,
    JobState.QUEUED: 0.10,
    JobState.HELD: 0.01,
    JobState.ASSIGNED: 0.01,
    JobState.RUNNING: 0.03,
}


class Timing(BaseModel):
    name: str
    runs: int
    median_ms: float
    p95_ms: float


def fill(path: Path, n_jobs: int, rng: random.Random) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    states = list(STATE_WEIGHTS)
    weights = list(STATE_WEIGHTS.values())
    with StateStore.open(path) as store, store.transaction():
        for i in range(n_jobs):
            state = rng.choices(states, weights)[0]
            job = Job(
                id=new_job_id(),
                spec=JobSpec(
                    title=f"ligand {i}",
                    engine=OpenMMSettings(total_steps=50_000_000),
                    priority=rng.choice((0, 0, 0, 5, 10)),
                ),
                state=state,
                epoch=rng.randint(0, 12),
                bundle=ObjectRef(key=f"jobs/x{i}/input/bundle.tar.gz", sha256="a" * 64, size=1),
                ns_per_day=rng.uniform(50, 400) if state is JobState.RUNNING else None,
                created_at=t0 + timedelta(seconds=i),
            )
            store.insert_job(job)
            if i % 5 == 0:  # relay history for a fifth of the jobs
                allocation = Allocation(
                    id=new_allocation_id(),
                    cluster=rng.choice(CLUSTERS),
                    partition="gpu",
                    image="openmm",
                    state=AllocationState.ENDED if i % 20 else AllocationState.RUNNING,
                    walltime_s=4 * 3600,
                    job_id=job.id,
                )
                store.insert_allocation(allocation)
                store.insert_segment(
                    Segment(
                        job_id=job.id,
                        epoch=max(job.epoch, 1),
                        allocation_id=allocation.id,
                        cluster=allocation.cluster,
                        outcome=SegmentOutcome.HANDOFF,
                    )
                )
                store.add_event("assigned", f"to {allocation.id}", job_id=job.id)
        for name in CLUSTERS:
            store.upsert_cluster_status(
                ClusterStatus(name=name, reachability=ClusterReachability.REACHABLE)
            )
        store.set_daemon_status(DaemonStatus(pid=1, hostname="bench", version="bench"))


def measure(name: str, repeat: int, fn: Callable[[], object]) -> Timing:
    fn()  # warm the page cache, as a second `relaymd status` would find it
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return _timing(name, samples)


async def measure_async_summary(path: Path, repeat: int) -> Timing:
    """The daemon's view: the same aggregate through aiosqlite's thread."""
    async with await AsyncStateStore.open(path) as store:
        await store.status_summary()
        samples = []
        for _ in range(repeat):
            start = time.perf_counter()
            await store.status_summary()
            samples.append((time.perf_counter() - start) * 1000)
    return _timing("AsyncStateStore.status_summary()", samples)


def _timing(name: str, samples: list[float]) -> Timing:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return Timing(name=name, runs=len(samples), median_ms=statistics.median(samples), p95_ms=p95)


def run_reads(path: Path, repeat: int) -> list[Timing]:
    timings: list[Timing] = []
    with StateStore.open(path) as store:
        some_id = store.list_jobs(limit=1)[0].id
        active = [JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING, JobState.HELD]

        def cli_status() -> None:  # what one `relaymd status` process does with the store
            with StateStore.open(path) as fresh:
                fresh.status_summary()

        timings += [
            measure("status_summary() (open connection)", repeat, store.status_summary),
            measure("open + status_summary() + close (one CLI run)", repeat, cli_status),
            measure("count_jobs_by_state()", repeat, store.count_jobs_by_state),
            measure(
                "list_jobs(active states, limit=50)",
                repeat,
                lambda: store.list_jobs(states=active, limit=50),
            ),
            measure(
                "list_jobs(limit=50) (all, by priority)", repeat, lambda: store.list_jobs(limit=50)
            ),
            measure(
                "find_job_by_prefix(12 chars, limit=2)",
                repeat,
                lambda: store.find_job_by_prefix(some_id[:12], limit=2),
            ),
            measure("list_events(limit=50)", repeat, store.list_events),
            measure(
                "list_allocations(states=[running])",
                repeat,
                lambda: store.list_allocations(states=[AllocationState.RUNNING]),
            ),
        ]

    timings.append(asyncio.run(measure_async_summary(path, repeat)))
    return timings


def table(timings: list[Timing]) -> str:
    lines = ["| read | runs | median ms | p95 ms |", "|---|---:|---:|---:|"]
    lines += [f"| {t.name} | {t.runs} | {t.median_ms:.2f} | {t.p95_ms:.2f} |" for t in timings]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="relaymd-bench-") as tmp:
        path = Path(tmp) / "state.sqlite"
        start = time.perf_counter()
        fill(path, args.jobs, random.Random(args.seed))
        fill_s = time.perf_counter() - start
        size_mib = path.stat().st_size / 2**20
        timings = run_reads(path, args.repeat)

    summary = timings[0]
    verdict = "meets" if summary.p95_ms < TARGET_MS else "MISSES"
    section = "\n".join(
        [
            "## status_scale",
            "",
            f"`bench/status_scale.py --jobs {args.jobs} --repeat {args.repeat}`: state database "
            f"with {args.jobs:,} jobs ({args.jobs // 5:,} allocations, segments and audit "
            f"events), {size_mib:.0f} MiB, filled in {fill_s:.1f} s. "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{platform.machine()} {platform.system()}, "
            f"{datetime.now(UTC):%Y-%m-%d}.",
            "",
            table(timings),
            "",
            f"`status_summary()` p95 {summary.p95_ms:.2f} ms: {verdict} the "
            f"{TARGET_MS:.0f} ms target.",
        ]
    )
    print(section)
    if not args.no_docs:
        write_section("status_scale", section)
        print(f"\nupdated {DOCS}", file=sys.stderr)
    return 0 if summary.p95_ms < TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
