"""GPU-slot utilisation of multi-GPU allocations on the SLURM testbed (ADR 0026).

    flock /tmp/relaymd-testbed.lock .venv/bin/python -m bench.slot_utilisation [--no-docs]

Runs the end-to-end scenario of tests/daemon/test_daemon_testbed_slots.py (six one-GPU and
one two-GPU AToM-like job over 4-GPU, 1-minute allocations on both clusters, one slot's worker
SIGKILLed) and measures

    GPU-slot utilisation = busy slot-seconds / allocated slot-seconds

* allocated: per SLURM job of slots that started, sacct's End - Start times its 4 GPUs
  (what a site charges);
* busy: per engine run, from its worker's `started` event to the segment's end event (or
  the slot's `slot_exited`) times the devices it ran on (2 for the two-GPU job: its held slot
  counts as busy, its GPU serves the job).

Left out of "busy": worker start-up and staging before `started`, the idle wait for an
assignment, the final upload after the engine stopped (all on the allocation's clock but no
engine on the GPU). Groups that SLURM never started (cancelled while pending) cost nothing
and count in neither. Prints a markdown table and writes it into docs/benchmarks.md
(section slot_utilisation).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench._docs import write_section
from tests.daemon.slots_testbed_scenario import ScenarioRun, run_scenario
from tests.testbed.testbed import health_problems, load_testbed


def allocated_slot_seconds(result: ScenarioRun) -> dict[str, float]:
    """Per cluster: sacct's End - Start of every started group, times its GPUs."""
    totals: dict[str, float] = {}
    for group in result.groups:
        if group.start is None or group.end is None:
            continue
        gpus = int(group.alloc_tres.split("gres/gpu=", 1)[1].split(",", 1)[0])
        seconds = (group.end - group.start).total_seconds() * gpus
        totals[group.cluster] = totals.get(group.cluster, 0.0) + seconds
    return totals


def busy_slot_seconds(result: ScenarioRun) -> dict[str, float]:
    totals: dict[str, float] = {}
    for span in result.busy:
        if span.end is None:
            continue
        seconds = (span.end - span.start).total_seconds() * len(span.devices)
        totals[span.cluster] = totals.get(span.cluster, 0.0) + seconds
    return totals


def report(result: ScenarioRun, wall_s: float) -> str:
    allocated = allocated_slot_seconds(result)
    busy = busy_slot_seconds(result)
    started = [g for g in result.groups if g.start is not None]
    lines = [
        "| cluster | 4-GPU allocations | allocated slot-s | busy slot-s | utilisation |",
        "|---|---:|---:|---:|---:|",
    ]
    for cluster in sorted(allocated):
        count = sum(g.cluster == cluster for g in started)
        a, b = allocated[cluster], busy.get(cluster, 0.0)
        lines.append(f"| {cluster} | {count} | {a:.0f} | {b:.0f} | {b / a:.0%} |")
    total_a, total_b = sum(allocated.values()), sum(busy.values())
    share = f"**{total_b / total_a:.0%}**"
    lines.append(f"| **both** | {len(started)} | {total_a:.0f} | {total_b:.0f} | {share} |")
    never = len(result.groups) - len(started)
    return "\n".join(
        [
            "`python -m bench.slot_utilisation` (under `flock /tmp/relaymd-testbed.lock`): the",
            "scenario of `tests/daemon/test_daemon_testbed_slots.py`: 6 one-GPU and 1 two-GPU",
            "AToM-like jobs (about 60 s of work each) over 4-GPU, 1-minute allocations on both",
            "testbed clusters, one slot's worker SIGKILLed mid-segment.",
            "",
            "* allocated slot-seconds: sacct End - Start of every group that started, x 4 GPUs;",
            "* busy slot-seconds: each engine run from its worker's `started` event to the",
            "  segment's end event (or the slot's `slot_exited`), x the devices it ran on (a",
            "  held slot is busy for its lead's job); the engine's stop and the final",
            "  checkpoint's upload before the end event are included;",
            "* not busy: worker start-up and staging before `started`, waiting for an",
            "  assignment, the idle tail of slots whose work ran out. The killed slot's",
            "  segment counts as busy up to the kill although its work since the last",
            "  checkpoint is redone.",
            "",
            *lines,
            "",
            f"{len(result.busy)} engine runs, {result.handoffs} handoffs, {never} group(s)",
            f"cancelled while pending (never charged); whole run {wall_s:.0f} s on the 2-core",
            "machine. With 1-minute allocations the fixed costs per allocation (start-up, the",
            "handoff margin, the idle tail) weigh far more than on hour-long ones.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    tb = load_testbed()
    if tb is None:
        parser.error("testbed not up: run tests/testbed/up.sh")
    problems = health_problems(tb)
    if problems or any(c.gpus < 4 for c in tb.clusters):
        parser.error(f"testbed not healthy or without GPUs: {problems} (re-run up.sh)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="slot-util-") as folder:
        result = run_scenario(Path(folder), tb)
    text = report(result, time.monotonic() - started)
    print(text)
    if not args.no_docs:
        write_section(
            "slot_utilisation", text, heading="GPU-slot utilisation (`bench/slot_utilisation.py`)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
