"""How long `relaymd report` takes on a large history: 1 000 jobs x 20 segments by default.

    .venv/bin/python -m bench.report_scale [--jobs 1000] [--segments 20] [--runs 3] [--no-write]

Fills a state file through the state store's API, with the relay-history writer the views'
tests use (each segment on its own allocation, with a queue wait before it and every outcome
kind among the last segments), then times, median of
`--runs`: the snapshot read from SQLite, the HTML page (plotly figures + page), and the whole
`relaymd report -o` command in a fresh process (imports included). Writes a markdown table
into docs/benchmarks.md between `<!-- bench:report -->` and `<!-- /bench:report -->`.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from bench._docs import write_section
from relaymd.models import (
    Job,
    JobSpec,
    JobState,
    ObjectRef,
    OpenMMSettings,
    SegmentOutcome,
    utcnow,
)
from relaymd.state import StateStore
from relaymd.views.page import PageOptions, render_page
from relaymd.views.snapshot import take_snapshot
from tests.support.relay_history import PlannedSegment, write_relay

TARGET_S = 2.0
BEFORE = (
    "snapshot 1.20 s + page 0.55 s = 1.75 s at load 1.3 (run just before this one), and"
    " 2.08 s + 1.36 s = 3.43 s at load 3.7 when first recorded (the issue saw 2.4-3.4 s)"
)
CLUSTERS = (("alpha", "gpu"), ("beta", "a100"))
LAST_OUTCOMES = (
    SegmentOutcome.COMPLETED, SegmentOutcome.RUNNING, SegmentOutcome.FAILED,
    SegmentOutcome.CANCELLED, SegmentOutcome.LOST, SegmentOutcome.STOPPED,
)  # fmt: skip
JOB_STATE = {
    SegmentOutcome.COMPLETED: JobState.COMPLETED,
    SegmentOutcome.RUNNING: JobState.RUNNING,
    SegmentOutcome.FAILED: JobState.FAILED,
    SegmentOutcome.CANCELLED: JobState.CANCELLED,
}


class Result(BaseModel):
    jobs: int
    segments: int
    snapshot_s: float
    page_s: float
    command_s: float
    html_mib: float


def fill(path: Path, n_jobs: int, n_segments: int, rng: random.Random) -> None:
    """Each job relays `n_segments` 4 h segments across both clusters, ending recently
    (tests.support.relay_history writes them, as for the views' tests)."""
    now = utcnow()
    with StateStore.open(path) as store, store.transaction():
        for j in range(n_jobs):
            last = LAST_OUTCOMES[j % len(LAST_OUTCOMES)]
            job_id = f"j{j:05d}"
            job = Job(
                id=job_id,
                spec=JobSpec(title=f"ligand {j}", engine=OpenMMSettings(total_steps=10**7)),
                state=JOB_STATE.get(last, JobState.QUEUED),
                step=n_segments * 100_000,
                total_steps=10**7,
                bundle=ObjectRef(key=f"jobs/{job_id}/b.tar.gz", sha256="a" * 64, size=1),
            )
            segments = []
            for epoch in range(1, n_segments + 1):
                outcome = last if epoch == n_segments else SegmentOutcome.HANDOFF
                cluster, partition = CLUSTERS[rng.randrange(2)]
                segments.append(
                    PlannedSegment(
                        cluster=cluster,
                        partition=partition,
                        outcome=outcome,
                        reason=None if outcome is SegmentOutcome.RUNNING else f"{outcome} (bench)",
                        queue_wait=timedelta(minutes=rng.uniform(1, 40)),
                        hours=3.9,
                    )
                )
            start = now - timedelta(hours=4.5 * n_segments + rng.uniform(0, 48))
            write_relay(store, job, segments, start, now)


def measure(path: Path, runs: int) -> tuple[float, float, float, int]:
    snapshots, pages = [], []
    html = ""
    for _ in range(runs):
        with StateStore.open(path) as store:
            start = time.perf_counter()
            snapshot = take_snapshot(store, utcnow())
            middle = time.perf_counter()
            html = render_page(snapshot, PageOptions())
            pages.append(time.perf_counter() - middle)
            snapshots.append(middle - start)
    return statistics.median(snapshots), statistics.median(pages), _command(path), len(html)


def _command(path: Path) -> float:
    """`relaymd report -o` in a fresh process, with a config that points at `path`."""
    folder = path.parent
    config = folder / "config.yaml"
    config.write_text(
        f"state_path: {path}\nstorage:\n  url: file://{folder}/storage\nclusters:\n"
        f"  - name: alpha\n    transport: local\n    scheduler: direct\n"
        f"    scratch: {folder}/scratch\n    native_worker: [{sys.executable}, -m, worker_entry]\n"
        "    partitions: [{name: gpu, walltime_minutes: 240, gpus_per_allocation: 1}]\n"
    )
    relaymd = Path(sys.executable).parent / "relaymd"
    env = {**os.environ, "RELAYMD_CONFIG": str(config)}
    start = time.perf_counter()
    subprocess.run([str(relaymd), "report", "-o", str(folder / "r.html")], env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.sqlite"
        fill(path, args.jobs, args.segments, random.Random(13))
        snapshot_s, page_s, command_s, size = measure(path, args.runs)
    result = Result(
        jobs=args.jobs, segments=args.jobs * args.segments, snapshot_s=snapshot_s,
        page_s=page_s, command_s=command_s, html_mib=size / 2**20,
    )  # fmt: skip
    print(result.model_dump_json(indent=2))
    if not args.no_write:
        write_section("report", _markdown(result, args.runs), heading="Relay report at scale")


def _markdown(result: Result, runs: int) -> str:
    total = result.snapshot_s + result.page_s
    verdict = "within" if total < TARGET_S else "over"
    return (
        f"`python -m bench.report_scale`: {result.jobs:,} jobs x "
        f"{result.segments // result.jobs} segments ({result.segments:,} segments, as many "
        f"allocations), median of {runs} runs. Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} shared CPUs, {time.strftime('%Y-%m-%d')}.\n\n"
        "| step | time |\n| --- | --- |\n"
        f"| snapshot from SQLite | {result.snapshot_s:.2f} s |\n"
        f"| HTML page (figure specs, JSON, page) | {result.page_s:.2f} s |\n"
        f"| report generation (both) | {total:.2f} s"
        f" ({verdict} the {TARGET_S:.0f} s target) |\n"
        f"| `relaymd report -o`, a fresh process (imports included) | {result.command_s:.2f} s |\n"
        f"\nThe page is {result.html_mib:.1f} MiB, of which 4.6 MiB is plotly.js inlined. Load"
        f" average during the run: {os.getloadavg()[0]:.1f} (the machine is shared).\n\n"
        f"Before issue #13 (commit f082fff) this bench measured {BEFORE}. Profiled, about"
        " 0.3 s of the snapshot alone was Python's cyclic garbage collector rescanning the"
        " growing heap of short-lived models, datetimes and strings, and more went to a"
        " GpuUsage model built per segment to sum GPU-seconds per cluster."
        " The snapshot and the page now run with the collector paused"
        " (relaymd/views/gc_pause.py) and the per-cluster GPU-seconds are summed as plain"
        " floats (relaymd.state.usage.allocation_usage_sums, the same additions in the same"
        " order); the timeline's hover times skip strftime."
        " What remains is mostly decoding the 40 000 rows into the state store's"
        " models (about 0.4 s) and the per-bar hover texts of the timeline.\n"
    )


if __name__ == "__main__":
    main()
