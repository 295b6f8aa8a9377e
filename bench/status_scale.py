"""How fast `relaymd status` and the daemon's reads are at 100 000 and 1 000 000 jobs.

Fills a temporary database per size (a long-lived installation: most jobs finished, 0.5 % in
flight each with a running allocation, a fifth of the rest with an ended allocation, relay
segments and audit events), then times `status_summary()` and the other reads a status or
list command or a daemon cycle makes, over repeated runs. Rows go in with executemany in one
transaction (through the schema's triggers), from JSON made by the models. Prints a markdown
table and replaces this benchmark's section of docs/benchmarks.md (between its markers).

`--json-out` keeps the numbers; `--before FILE` adds a column with numbers an earlier commit
measured with this same script (run it with PYTHONPATH at that commit's tree).

    .venv/bin/python -m bench.status_scale [--jobs 100000 1000000] [--repeat 30] [--no-docs]
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

from bench._docs import DOCS, write_section
from relaymd.ids import new_allocation_id, new_job_id
from relaymd.models import (
    Allocation,
    AllocationState,
    AuditEvent,
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
from relaymd.state.queries import ts

TARGET_MS = 50.0
CLUSTERS = ("clusterA", "clusterB", "preempt")
# Roughly a long-lived installation: most jobs finished, a backlog, a few in flight.
STATE_WEIGHTS = {
    JobState.COMPLETED: 0.845,
    JobState.FAILED: 0.02,
    JobState.CANCELLED: 0.02,
    JobState.QUEUED: 0.10,
    JobState.HELD: 0.01,
    JobState.ASSIGNED: 0.001,
    JobState.RUNNING: 0.004,
}
ID_MARK, TIME_MARK, ALLOC_MARK = "JOBIDMARK", "2000-01-01T00:00:00Z", "ALLOCIDMARK"


class Timing(BaseModel):
    name: str
    runs: int
    median_ms: float
    p95_ms: float


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")  # pydantic's JSON form of UTC


def _templates() -> tuple[dict[tuple[JobState, int], str], dict[AllocationState, str], str, str]:
    """JSON as the models write it, with marks where each row's id and time go."""
    mark_time = datetime(2000, 1, 1, tzinfo=UTC)
    jobs = {
        (state, priority): Job(
            id=ID_MARK,
            spec=JobSpec(
                title="ligand",
                engine=OpenMMSettings(total_steps=50_000_000),
                priority=priority,
            ),
            state=state,
            epoch=3,
            bundle=ObjectRef(key=f"jobs/{ID_MARK}/input/bundle.tar.gz", sha256="a" * 64, size=1),
            ns_per_day=180.0 if state is JobState.RUNNING else None,
            allocation_id=ALLOC_MARK if state.on_allocation else None,
            created_at=mark_time,
            updated_at=mark_time,
        ).model_dump_json()
        for state in STATE_WEIGHTS
        for priority in (0, 5, 10)
    }
    allocations = {
        state: Allocation(
            id=ALLOC_MARK,
            cluster="CLUSTERMARK",
            partition="gpu",
            image="openmm",
            state=state,
            walltime_s=4 * 3600,
            job_id=ID_MARK,
            submitted_at=mark_time,
        ).model_dump_json()
        for state in (AllocationState.RUNNING, AllocationState.ENDED)
    }
    segment = Segment(
        job_id=ID_MARK,
        epoch=3,
        allocation_id=ALLOC_MARK,
        cluster="CLUSTERMARK",
        outcome=SegmentOutcome.HANDOFF,
        started_at=mark_time,
    ).model_dump_json()
    event = AuditEvent(
        kind="assigned", message=f"to {ALLOC_MARK}", job_id=ID_MARK, at=mark_time
    ).model_dump_json()
    return jobs, allocations, segment, event


def fill(path: Path, n_jobs: int, rng: random.Random) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    templates = _templates()
    with StateStore.open(path) as store:
        for name in CLUSTERS:
            store.upsert_cluster_status(
                ClusterStatus(name=name, reachability=ClusterReachability.REACHABLE)
            )
        store.set_daemon_status(DaemonStatus(pid=1, hostname="bench", version="bench"))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    for first in range(0, n_jobs, CHUNK):
        _insert_rows(conn, *_rows(range(first, min(n_jobs, first + CHUNK)), rng, t0, templates))
    conn.execute("COMMIT")
    conn.close()


Row = tuple[object, ...]
CHUNK = 50_000  # rows made and inserted at a time: bounded memory at a million jobs


def _rows(
    numbers: range,
    rng: random.Random,
    t0: datetime,
    templates: tuple[dict[tuple[JobState, int], str], dict[AllocationState, str], str, str],
) -> tuple[list[Row], list[Row], list[Row], list[Row]]:
    job_json, allocation_json, segment_json, event_json = templates
    states = list(STATE_WEIGHTS)
    weights = list(STATE_WEIGHTS.values())
    jobs: list[Row] = []
    allocations: list[Row] = []
    segments: list[Row] = []
    events: list[Row] = []
    for i in numbers:
        state = rng.choices(states, weights)[0]
        priority = rng.choice((0, 0, 0, 5, 10))
        job_id, created = new_job_id(), t0 + timedelta(seconds=i)
        at, iso = ts(created), _iso(created)
        in_flight = state.on_allocation
        alloc_id = new_allocation_id() if in_flight or i % 5 == 0 else None
        data = job_json[(state, priority)].replace(ID_MARK, job_id).replace(TIME_MARK, iso)
        data = data.replace(ALLOC_MARK, alloc_id or "")
        rate = 180.0 if state is JobState.RUNNING else None
        jobs.append(
            (job_id, state.value, priority, 3, alloc_id if in_flight else None, rate, at, at, data)
        )
        if alloc_id is None:
            continue
        cluster = rng.choice(CLUSTERS)
        alloc_state = AllocationState.RUNNING if in_flight else AllocationState.ENDED
        data = allocation_json[alloc_state].replace(ALLOC_MARK, alloc_id)
        data = data.replace(ID_MARK, job_id).replace(TIME_MARK, iso).replace("CLUSTERMARK", cluster)
        allocations.append((alloc_id, cluster, alloc_state.value, job_id, at, data))
        data = segment_json.replace(ALLOC_MARK, alloc_id).replace(ID_MARK, job_id)
        data = data.replace(TIME_MARK, iso).replace("CLUSTERMARK", cluster)
        segments.append((job_id, 3, alloc_id, cluster, 0, at, "handoff", data))
        data = event_json.replace(ALLOC_MARK, alloc_id).replace(ID_MARK, job_id)
        events.append((at, "assigned", job_id, alloc_id, cluster, data.replace(TIME_MARK, iso)))
    return jobs, allocations, segments, events


def _insert_rows(
    conn: sqlite3.Connection,
    jobs: list[Row],
    allocations: list[Row],
    segments: list[Row],
    events: list[Row],
) -> None:
    conn.executemany(
        "INSERT INTO jobs (id, state, priority, epoch, allocation_id, ns_per_day, "
        "created_at, updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        jobs,
    )
    conn.executemany(
        "INSERT INTO allocations (id, cluster, state, job_id, submitted_at, data) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        allocations,
    )
    conn.executemany(
        "INSERT INTO segments (job_id, epoch, allocation_id, cluster, start_step, "
        "started_at, outcome, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        segments,
    )
    conn.executemany(
        "INSERT INTO events (at, kind, job_id, allocation_id, cluster, data) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        events,
    )


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


LIVE = [AllocationState.SUBMITTING, AllocationState.PENDING, AllocationState.RUNNING]
ACTIVE = JobState.active()  # what the daemon loads every cycle
SUMMARY = "open + status_summary() + close (one CLI run)"


def run_reads(path: Path, repeat: int) -> list[Timing]:
    timings: list[Timing] = []
    with StateStore.open(path) as store:
        some_id = store.list_jobs(limit=1)[0].id

        def cli_status() -> None:  # what one `relaymd status` process does with the store
            with StateStore.open(path) as fresh:
                fresh.status_summary()

        timings += [
            measure(SUMMARY, repeat, cli_status),
            measure("status_summary() (open connection)", repeat, store.status_summary),
            measure("count_jobs_by_state()", repeat, store.count_jobs_by_state),
            measure(
                "list_jobs(active states, limit=50)",
                repeat,
                lambda: store.list_jobs(states=ACTIVE, limit=50),
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
            # The daemon's per-cycle reads: every live allocation of a cluster, every active
            # job. Their cost follows what is live, not what was ever submitted.
            measure(
                "daemon: list_allocations(cluster, live states)",
                repeat,
                lambda: store.list_allocations(cluster=CLUSTERS[0], states=LIVE),
            ),
            measure(
                "daemon: list_jobs(active states)",
                3,  # parses every active job's JSON: seconds at a 100 000-job backlog
                lambda: store.list_jobs(states=ACTIVE),
            ),
        ]

    timings.append(asyncio.run(measure_async_summary(path, repeat)))
    return timings


class SizeResult(BaseModel):
    jobs: int
    allocations: int
    live_allocations: int
    size_mib: float
    fill_s: float
    timings: list[Timing]


class BenchResult(BaseModel):
    label: str
    sizes: list[SizeResult]


def measure_size(n_jobs: int, repeat: int, seed: int) -> SizeResult:
    with tempfile.TemporaryDirectory(prefix="relaymd-bench-") as tmp:
        path = Path(tmp) / "state.sqlite"
        start = time.perf_counter()
        fill(path, n_jobs, random.Random(seed))
        fill_s = time.perf_counter() - start
        conn = sqlite3.connect(path)
        allocations = conn.execute("SELECT COUNT(*) FROM allocations").fetchone()[0]
        live = conn.execute("SELECT COUNT(*) FROM allocations WHERE state = 'running'").fetchone()[
            0
        ]
        conn.close()
        return SizeResult(
            jobs=n_jobs,
            allocations=allocations,
            live_allocations=live,
            size_mib=path.stat().st_size / 2**20,
            fill_s=fill_s,
            timings=run_reads(path, repeat),
        )


def _cell(timing: Timing | None) -> str:
    return "" if timing is None else f"{timing.median_ms:.2f} / {timing.p95_ms:.2f}"


def table(result: BenchResult, before: BenchResult | None) -> str:
    header = ["read"]
    for size in result.sizes:
        if before is not None:
            header.append(f"{size.jobs:,} jobs, {before.label}")
        header.append(f"{size.jobs:,} jobs, {result.label}")
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
        f"| (median / p95 ms over the runs) |{' |' * (len(header) - 1)}",
    ]
    for row, timing in enumerate(result.sizes[0].timings):
        cells = [timing.name]
        for size in result.sizes:
            if before is not None:
                old = next((b for b in before.sizes if b.jobs == size.jobs), None)
                old_timing = (
                    next((t for t in old.timings if t.name == timing.name), None) if old else None
                )
                cells.append(_cell(old_timing))
            cells.append(_cell(size.timings[row]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _summary(size: SizeResult) -> Timing:
    return next(t for t in size.timings if t.name == SUMMARY)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--label", default="after")
    parser.add_argument("--json-out", type=Path, help="also write the numbers as JSON")
    parser.add_argument("--before", type=Path, help="JSON of an earlier run, shown alongside")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()

    result = BenchResult(
        label=args.label,
        sizes=[measure_size(n, args.repeat, args.seed) for n in args.jobs],
    )
    if args.json_out:
        args.json_out.write_text(result.model_dump_json(indent=1))
    before = BenchResult.model_validate_json(args.before.read_text()) if args.before else None

    largest = result.sizes[-1]
    summary = _summary(largest)
    verdict = "meets" if summary.p95_ms <= TARGET_MS else "MISSES"
    sizes = "; ".join(
        f"{s.jobs:,} jobs ({s.allocations:,} allocations of which {s.live_allocations:,} "
        f"running, as many segments and audit events; {s.size_mib:.0f} MiB, filled in "
        f"{s.fill_s:.1f} s)"
        for s in result.sizes
    )
    section = "\n".join(
        [
            "## status_scale",
            "",
            f"`python -m bench.status_scale --jobs {' '.join(map(str, args.jobs))} --repeat "
            f"{args.repeat}`: {sizes}. "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{platform.machine()} {platform.system()}, 2 shared cores, "
            f"{datetime.now(UTC):%Y-%m-%d}.",
            "",
            table(result, before),
            "",
            f"One `relaymd status` read (open, `status_summary()`, close) at {largest.jobs:,} "
            f"jobs: p95 {summary.p95_ms:.2f} ms, {verdict} the {TARGET_MS:.0f} ms target.",
        ]
    )
    print(section)
    if not args.no_docs:
        write_section("status_scale", section)
        print(f"\nupdated {DOCS}", file=sys.stderr)
    return 0 if summary.p95_ms <= TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
