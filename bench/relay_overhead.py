"""Per-segment overhead of a relay: real `relaymd-worker` processes, openmm engine on the CPU
platform, a TIP3P water box (relaymd.demo.water_box, as examples/water-box/make_inputs.py writes
it), on file:// storage or on S3: moto's server behind a loopback proxy that delays every
request by `--delay-ms` (B2 answers in ~100-150 ms) and counts the requests.

    .venv/bin/python -m bench.relay_overhead [--segments 3] [--simulate-s 8] [--box-nm 3.0]
        [--storage file|s3] [--delay-ms 150]

On S3 the worker imports boto3 as in production (it is part of start -> first step), and the
table adds the storage requests of each phase as the proxy saw them.

Measures, per segment: process start -> first MD step (the `started` event, written just
before the first chunk), stop request (control.json) -> final checkpoint verified in storage
(the `stopped` event, written after verification), and the fraction of the segment's wall
time spent simulating. Prints a markdown table and writes it into docs/benchmarks.md between
the relay_overhead markers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._docs import write_section
from relaymd.demo.water_box import write_water_box
from relaymd.mailbox.files import atomic_write_bytes, atomic_write_model, read_events
from relaymd.mailbox.models import Assignment, Control, ControlAction, EventKind, WorkerEvent
from relaymd.models import (
    CheckpointRef,
    StorageAccess,
)
from relaymd.storage import open_store
from relaymd.storage.bundle import pack_bundle
from relaymd.storage.keys import bundle_key
from tests.latency_proxy import LatencyProxy, run_latency_proxy
from tests.moto_server import run_moto_server

REPO = Path(__file__).resolve().parents[1]


def _wait_event(path: Path, kinds: set[EventKind], timeout: float) -> WorkerEvent:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for event in read_events(path, 0)[0]:
            if event.kind in kinds:
                return event
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {kinds} in {path}")


def run(
    segments: int, simulate_s: float, box_nm: float, storage: str, delay_s: float
) -> tuple[int, list[dict[str, float]]]:
    root = Path(tempfile.mkdtemp(prefix="relaymd-bench-"))
    inputs = root / "inputs"
    atoms = write_water_box(inputs, box_nm, seed=5, platform="CPU").atoms
    with contextlib.ExitStack() as stack:
        proxy: LatencyProxy | None = None
        if storage == "s3":
            moto = stack.enter_context(run_moto_server())
            proxy = stack.enter_context(run_latency_proxy(moto.endpoint_url, delay_s))
            access = moto.access(endpoint_url=proxy.endpoint_url)
        else:
            (root / "store").mkdir()
            access = StorageAccess(url=f"file://{root / 'store'}")
        return atoms, _segments(root, inputs, access, proxy, segments, simulate_s)


def _segments(
    root: Path,
    inputs: Path,
    access: StorageAccess,
    proxy: LatencyProxy | None,
    segments: int,
    simulate_s: float,
) -> list[dict[str, float]]:
    def requests() -> int:
        return proxy.count() if proxy is not None else 0

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
        before_start = requests()
        t0 = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker_entry", "--alloc-dir", str(alloc),
             "--platform", "CPU", "--heartbeat-interval", "1", "--idle-timeout", "1",
             "--margin-min", "1", "--margin-max", "60", "--work-dir", str(root / "work")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started = _wait_event(alloc / "events.jsonl", {EventKind.STARTED}, 300)
        start_requests = requests() - before_start
        if proxy is not None:
            for request in proxy.snapshot()[before_start:]:
                print(f"  start: {request.method} {request.path}", file=sys.stderr)
        time.sleep(simulate_s)
        before_stop = requests()
        t_stop = time.time()
        atomic_write_model(
            alloc / "control.json", Control(action=ControlAction.STOP, job_id="bench", epoch=epoch)
        )
        stopped = _wait_event(alloc / "events.jsonl", {EventKind.STOPPED}, 300)
        stop_requests = requests() - before_stop
        if proxy is not None:  # what the stop phase sent, for the reader of the log
            for request in proxy.snapshot()[before_stop:]:
                print(f"  stop: {request.method} {request.path}", file=sys.stderr)
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
                "start_requests": float(start_requests),
                "stop_requests": float(stop_requests),
                "segment_requests": float(requests() - before_start),
            }
        )
    return rows


def table(
    atoms: int, rows: list[dict[str, float]], simulate_s: float, storage: str, delay_ms: float
) -> str:
    where = (
        f"S3 (moto behind a loopback proxy adding {delay_ms:g} ms per request; boto3 imported "
        "by the worker as in production)"
        if storage == "s3"
        else "file:// storage"
    )
    lines = [
        f"OpenMM CPU platform, TIP3P water box of {atoms} atoms, {where}, "
        f"{simulate_s:g} s of simulation per segment, {os.cpu_count()} CPU cores.",
        "",
        "| segment | start → first MD step (s) | stop → checkpoint verified (s) "
        "| stopped → exit (s) | segment wall (s) | simulating | steps "
        "| storage requests: start / stop / segment |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def line(label: str, r: dict[str, float]) -> str:
        return (
            f"| {label} | {r['startup_s']:.2f} | {r['handoff_s']:.2f} | {r['exit_s']:.2f} | "
            f"{r['segment_s']:.2f} | {r['fraction']:.0%} | {int(r['steps'])} | "
            f"{r['start_requests']:g} / {r['stop_requests']:g} / {r['segment_requests']:g} |"
        )

    lines += [line(str(int(r["epoch"])), r) for r in rows]
    mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0]}
    lines.append(line("mean", mean))
    per_handoff = mean["startup_s"] + mean["handoff_s"]
    lines += [
        "",
        f"Handoff (stop → checkpoint verified, plus the next segment's start → first MD step): "
        f"{per_handoff:.2f} s; with the old worker's exit, {per_handoff + mean['exit_s']:.2f} s "
        "(target: under 5 s).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--simulate-s", type=float, default=8.0)
    parser.add_argument("--box-nm", type=float, default=3.0)
    parser.add_argument("--storage", choices=("file", "s3"), default="file")
    parser.add_argument("--delay-ms", type=float, default=150.0, help="per request, S3 only")
    parser.add_argument("--section", help="docs section (default: by storage)")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args()
    atoms, rows = run(
        args.segments, args.simulate_s, args.box_nm, args.storage, args.delay_ms / 1000
    )
    markdown = table(atoms, rows, args.simulate_s, args.storage, args.delay_ms)
    print(markdown)
    if not args.no_doc:
        section = args.section or (
            "relay_overhead" if args.storage == "file" else "relay_overhead_s3"
        )
        heading = "Relay overhead" if args.storage == "file" else "Relay overhead over S3"
        write_section(section, markdown, heading=heading)


if __name__ == "__main__":
    main()
