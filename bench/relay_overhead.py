"""Per-segment overhead of a relay: real `relaymd-worker` processes, openmm engine on the CPU
platform, a TIP3P water box of a few thousand atoms, file:// storage.

    .venv/bin/python bench/relay_overhead.py [--segments 3] [--simulate-s 8] [--box-nm 3.0]

Measures, per segment: process start -> first MD step (the `started` event, written just
before the first chunk), stop request (control.json) -> final checkpoint verified in storage
(the `stopped` event, written after verification), and the fraction of the segment's wall
time spent simulating. Prints a markdown table and writes it into docs/benchmarks.md between
the relay_overhead markers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from relaymd.models import (
    Assignment,
    CheckpointRef,
    Control,
    ControlAction,
    EventKind,
    StorageAccess,
    WorkerEvent,
)
from relaymd.storage import open_store
from relaymd.storage.bundle import pack_bundle
from relaymd.storage.keys import bundle_key
from relaymd.storage.mailbox import atomic_write_bytes, atomic_write_model, read_events
from relaymd.water_box import write_water_box

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # a sibling module; bench/ is not a package

REPO = Path(__file__).resolve().parents[1]


def _wait_event(path: Path, kinds: set[EventKind], timeout: float) -> WorkerEvent:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for event in read_events(path, 0)[0]:
            if event.kind in kinds:
                return event
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {kinds} in {path}")


def run(segments: int, simulate_s: float, box_nm: float) -> tuple[int, list[dict[str, float]]]:
    root = Path(tempfile.mkdtemp(prefix="relaymd-bench-"))
    inputs = root / "inputs"
    atoms = write_water_box(inputs, box_nm, seed=5, platform="CPU").atoms
    (root / "store").mkdir()
    access = StorageAccess(url=f"file://{root / 'store'}")
    store = open_store(access)
    pack_bundle(inputs, root / "bundle.tar.gz")
    bundle = store.put_file(bundle_key("bench"), root / "bundle.tar.gz")
    engine = {"kind": "openmm", "total_steps": 10_000_000, "report_every_steps": 500}
    pointer: CheckpointRef | None = None
    rows = []
    for epoch in range(1, segments + 1):
        alloc = root / "alloc" / f"bench{epoch}"
        alloc.mkdir(parents=True, mode=0o700)
        atomic_write_bytes(alloc / "credentials", access.credentials_json().encode(), 0o600)
        assignment = Assignment.model_validate(
            {
                "allocation_id": alloc.name,
                "job_id": "bench",
                "epoch": epoch,
                "engine": engine,
                "bundle": bundle,
                "resume": pointer,
                "checkpoint_interval_s": 3600,
            }
        )
        atomic_write_model(alloc / "assignment.json", assignment)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RELAYMD_"))}
        env["PYTHONPATH"] = str(REPO)
        t0 = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker_entry", "--alloc-dir", str(alloc),
             "--platform", "CPU", "--heartbeat-interval", "1", "--idle-timeout", "1",
             "--margin-min", "1", "--margin-max", "60", "--work-dir", str(root / "work")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started = _wait_event(alloc / "events.jsonl", {EventKind.STARTED}, 300)
        time.sleep(simulate_s)
        t_stop = time.time()
        atomic_write_model(
            alloc / "control.json", Control(action=ControlAction.STOP, job_id="bench", epoch=epoch)
        )
        stopped = _wait_event(alloc / "events.jsonl", {EventKind.STOPPED}, 300)
        proc.wait(120)
        t_exit = time.time()
        assert stopped.checkpoint is not None
        pointer = stopped.checkpoint
        startup = started.at.timestamp() - t0
        handoff = stopped.at.timestamp() - t_stop
        simulating = t_stop - started.at.timestamp()
        rows.append(
            {
                "epoch": epoch,
                "startup_s": startup,
                "handoff_s": handoff,
                "exit_s": t_exit - stopped.at.timestamp(),
                "segment_s": t_exit - t0,
                "fraction": simulating / (t_exit - t0),
                "steps": float(stopped.step or 0) - float(started.step or 0),
            }
        )
    return atoms, rows


def table(atoms: int, rows: list[dict[str, float]], simulate_s: float) -> str:
    lines = [
        f"OpenMM CPU platform, TIP3P water box of {atoms} atoms, file:// storage, "
        f"{simulate_s:g} s of simulation per segment, {os.cpu_count()} CPU cores.",
        "",
        "| segment | start → first MD step (s) | stop → checkpoint verified (s) "
        "| stopped → exit (s) | segment wall (s) | simulating | steps |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {int(r['epoch'])} | {r['startup_s']:.2f} | {r['handoff_s']:.2f} | "
            f"{r['exit_s']:.2f} | {r['segment_s']:.2f} | {r['fraction']:.0%} | {int(r['steps'])} |"
        )
    mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
    lines.append(
        f"| mean | {mean['startup_s']:.2f} | {mean['handoff_s']:.2f} | {mean['exit_s']:.2f} | "
        f"{mean['segment_s']:.2f} | {mean['fraction']:.0%} | {int(mean['steps'])} |"
    )
    per_handoff = mean["startup_s"] + mean["handoff_s"] + mean["exit_s"]
    lines += ["", f"Overhead per handoff (startup + final checkpoint + exit): {per_handoff:.2f} s "
              "(target: under 5 s)."]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--simulate-s", type=float, default=8.0)
    parser.add_argument("--box-nm", type=float, default=3.0)
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args()
    atoms, rows = run(args.segments, args.simulate_s, args.box_nm)
    markdown = table(atoms, rows, args.simulate_s)
    print(markdown)
    if not args.no_doc:
        write_section("relay_overhead", markdown, heading="Relay overhead")


if __name__ == "__main__":
    main()
