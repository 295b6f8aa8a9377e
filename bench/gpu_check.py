"""GPU readiness of a worker node, measured for real; run through bench/gpu_check.sh.

    .venv/bin/python -m bench.gpu_check               # CUDA, ~25 000-atom water box
    .venv/bin/python -m bench.gpu_check --dry-run     # CPU/Reference, small box: proves the script

Rows of the one table it prints:
  - OpenMM platforms found, and whether CUDA is among them;
  - nvidia-smi GPU names and memory, parsed by the worker's own parser (worker_entry.heartbeat)
    from the real tool;
  - start-up to the first MD step: plain OpenMM (import, Context creation incl. the CUDA
    context, first step) and each relay segment (process start -> the worker's `started` event);
  - ns/day of the same system run uninterrupted with plain OpenMM, and relayed through three
    real `relaymd-worker` processes (each resuming from the previous one's checkpoint in a
    file:// store), wall time including every start-up and hand-off; target >= 98 %; and
    the relay's cost per segment (relayed less uninterrupted wall time, over the 3 segments),
    with the share of uninterrupted speed it leaves at a 4-hour segment;
  - resume across platforms (CUDA -> CPU) through the State XML: a fourth worker on the CPU
    platform resumes from the last GPU checkpoint and finishes its segment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from relaymd.demo.water_box import write_water_box
from relaymd.mailbox.files import atomic_write_bytes, atomic_write_model, read_events
from relaymd.mailbox.models import Assignment, EventKind, WorkerEvent
from relaymd.models import CheckpointRef, StorageAccess
from relaymd.storage import open_store
from relaymd.storage.bundle import pack_bundle
from relaymd.storage.keys import bundle_key
from worker_entry.heartbeat import query_gpus

REPO = Path(__file__).resolve().parents[1]
DT_PS = 0.002  # relaymd.demo.water_box's LangevinMiddleIntegrator step
DRY_RATIO = "n/a (dry run: seconds-long segments)"
WALLTIME_S = 4 * 3600  # a typical GPU partition's walltime, one segment per allocation
TERMINAL = {EventKind.COMPLETED, EventKind.STOPPED, EventKind.FAILED, EventKind.HANDOFF}

# Plain OpenMM, uninterrupted: the reference the relay is measured against. Run as its own
# process so that its start-up (import, context creation) is counted like a worker's.
PLAIN = """
import json, sys, time
t0 = float(sys.argv[4])
import openmm as mm
d = sys.argv[1]
system = mm.XmlSerializer.deserialize(open(d + "/system.xml").read())
integrator = mm.XmlSerializer.deserialize(open(d + "/integrator.xml").read())
state = mm.XmlSerializer.deserialize(open(d + "/state.xml").read())
context = mm.Context(system, integrator, mm.Platform.getPlatformByName(sys.argv[2]))
context.setState(state)
integrator.step(1)
context.getState(getEnergy=True)
first = time.time()
steps = int(sys.argv[3])
if steps < 0:  # calibration: steps per second over a few seconds
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < -steps:
        integrator.step(200); context.getState(getEnergy=True); n += 200
    print(json.dumps({"rate": n / (time.perf_counter() - t), "startup": first - t0}))
else:
    integrator.step(steps - 1)
    context.getState(getEnergy=True)
    print(json.dumps({"wall": time.time() - t0, "startup": first - t0}))
"""


def platforms() -> list[str]:
    import openmm as mm

    return [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]


def plain_run(inputs: Path, platform: str, steps: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", PLAIN, str(inputs), platform, str(steps), str(time.time())],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"plain OpenMM on {platform} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def wait_terminal(events: Path, proc: subprocess.Popen[bytes]) -> WorkerEvent:
    while True:
        found = [e for e in read_events(events, 0)[0] if e.kind in TERMINAL]
        if found:
            return found[-1]
        if proc.poll() is not None:
            found = [e for e in read_events(events, 0)[0] if e.kind in TERMINAL]
            if found:
                return found[-1]
            raise SystemExit(f"worker exited {proc.returncode} without a final event: {events}")
        time.sleep(0.05)


class Relay:
    """The daemon's part, by hand: one assignment per segment, resume from the last checkpoint."""

    def __init__(self, root: Path, inputs: Path) -> None:
        self.root = root
        (root / "store").mkdir(parents=True)
        self.access = StorageAccess(url=f"file://{root / 'store'}")
        store = open_store(self.access)
        pack_bundle(inputs, root / "bundle.tar.gz")
        self.bundle = store.put_file(bundle_key("gpucheck"), root / "bundle.tar.gz")
        self.pointer: CheckpointRef | None = None
        self.epoch = 0

    def segment(
        self, platform: str, until_step: int
    ) -> tuple[WorkerEvent, WorkerEvent, float, float]:
        """Run one worker to `until_step`: started and final events, process wall seconds and
        process start -> first MD step seconds."""
        self.epoch += 1
        alloc = self.root / "alloc" / f"seg{self.epoch}"
        alloc.mkdir(parents=True, mode=0o700)
        atomic_write_bytes(alloc / "credentials", self.access.credentials_json().encode(), 0o600)
        engine = {"kind": "openmm", "total_steps": until_step, "report_every_steps": 5000}
        assignment = Assignment.model_validate(
            {
                "allocation_id": alloc.name,
                "job_id": "gpucheck",
                "epoch": self.epoch,
                "engine": engine,
                "bundle": self.bundle,
                "resume": self.pointer,
                "checkpoint_interval_s": 3600,
            }
        )
        atomic_write_model(alloc / "assignment.json", assignment)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RELAYMD_"))}
        env["PYTHONPATH"] = str(REPO)
        t0 = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker_entry", "--alloc-dir", str(alloc),
             "--platform", platform, "--heartbeat-interval", "2", "--idle-timeout", "1",
             "--work-dir", str(self.root / "work" / alloc.name)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        final = wait_terminal(alloc / "events.jsonl", proc)
        proc.wait(120)
        wall = time.time() - t0
        events = read_events(alloc / "events.jsonl", 0)[0]
        started = next(e for e in events if e.kind is EventKind.STARTED)
        if final.kind is not EventKind.COMPLETED or final.checkpoint is None:
            raise SystemExit(f"segment {self.epoch} on {platform} ended {final.kind}: {alloc}")
        self.pointer = final.checkpoint
        return started, final, wall, started.at.timestamp() - t0


def ns_per_day(steps: int, seconds: float) -> float:
    return steps * DT_PS / 1000 / (seconds / 86400)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU/Reference, small box")
    parser.add_argument("--box-nm", type=float, help="water box edge (default 6.3: ~25k atoms)")
    parser.add_argument("--segment-s", type=float, help="simulated seconds per segment")
    args = parser.parse_args()
    gpu, fallback = ("CPU", "Reference") if args.dry_run else ("CUDA", "CPU")
    box_nm = args.box_nm or (2.0 if args.dry_run else 6.3)
    segment_s = args.segment_s or (4.0 if args.dry_run else 45.0)
    rows: list[tuple[str, str, str]] = []
    found = platforms()
    rows.append(("OpenMM platforms", ", ".join(found), "ok" if gpu in found else "MISSING"))
    gpus = query_gpus()
    rows.append(
        (
            "nvidia-smi GPUs",
            "; ".join(f"{g.name} ({g.memory_total_mib} MiB)" for g in gpus) or "none reported",
            "ok" if gpus else ("n/a (dry run)" if args.dry_run else "MISSING"),
        )
    )
    if gpu not in found:
        print_table(rows, gpu, 0)
        return 1
    with tempfile.TemporaryDirectory(prefix="relaymd-gpucheck-") as tmp:
        root = Path(tmp)
        box = write_water_box(root / "inputs", box_nm, seed=3, platform=gpu)
        calib = plain_run(root / "inputs", gpu, -3)
        per_segment = max(1000, int(calib["rate"] * segment_s) // 1000 * 1000)
        total = 3 * per_segment
        plain = plain_run(root / "inputs", gpu, total)
        rows.append(
            ("start-up to first step, plain OpenMM", f"{plain['startup']:.2f} s", "incl. context")
        )
        relay = Relay(root, root / "inputs")
        relay_wall = 0.0
        startups = []
        for k in range(1, 4):
            _, _, wall, startup = relay.segment(gpu, k * per_segment)
            relay_wall += wall
            startups.append(startup)
        startup_text = ", ".join(f"{s:.2f} s" for s in startups)
        plain_rate = ns_per_day(total, plain["wall"])
        relay_rate = ns_per_day(total, relay_wall)
        ratio = relay_rate / plain_rate
        rows.append(("start-up to first step, relay segments", startup_text, ""))
        rows.append((f"ns/day uninterrupted ({total} steps)", f"{plain_rate:.1f}", ""))
        rows.append(
            (
                "ns/day relayed (3 workers)",
                f"{relay_rate:.1f} ({ratio:.1%})",
                "ok" if ratio >= 0.98 else ("below 98 %" if not args.dry_run else DRY_RATIO),
            )
        )
        # The relay's cost is per segment (start-up, final checkpoint, exit), not per step: what
        # it is worth at a real walltime follows from it.
        per_segment_s = (relay_wall - plain["wall"]) / 3
        at_walltime = WALLTIME_S / (WALLTIME_S + max(per_segment_s, 0.0))
        rows.append(
            (
                "relay cost per segment (relayed less uninterrupted wall time, / 3)",
                f"{per_segment_s:.2f} s; at a 4 h segment {at_walltime:.2%} of uninterrupted",
                "",
            )
        )
        started, final, _, _ = relay.segment(fallback, total + 200)
        cross_ok = started.resumed_from == "state_xml" and final.step == total + 200
        rows.append(
            (
                f"resume {gpu} -> {fallback} (State XML)",
                f"resumed_from={started.resumed_from}, step {started.step} -> {final.step}",
                "ok" if cross_ok else "FAILED",
            )
        )
    print_table(rows, gpu, box.atoms)
    passing = ("ok", "", "incl. context", "n/a (dry run)", DRY_RATIO)
    return 0 if all(r[2] in passing for r in rows) else 1


def print_table(rows: list[tuple[str, str, str]], gpu: str, atoms: int) -> None:
    print(f"\nRelayMD GPU check: platform {gpu}, TIP3P water box of {atoms} atoms\n")
    print("| check | measured | verdict |\n|---|---|---|")
    for check, measured, verdict in rows:
        print(f"| {check} | {measured} | {verdict} |")


if __name__ == "__main__":
    sys.exit(main())
