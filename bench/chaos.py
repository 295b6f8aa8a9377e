"""Chaos campaign on the two-cluster testbed: many jobs relayed through seeded random faults.

OpenMM water boxes (Reference platform) and AToM-like command jobs
(examples/atom-like/fake_atom.py, preset `atom`) relay over both testbed clusters on 1-minute
SLURM allocations while faults from a schedule drawn with random.Random(seed) hit them: worker
SIGKILL, engine SIGKILL, scancel, node down, sshd stopped, daemon SIGKILL and offline, moto
frozen, a heartbeat left half-written (worker frozen), a checkpoint object corrupted (see
bench/chaos_faults.py). Every fault is undone before the next one and in `finally`.

The verdict comes from outputs only (bench/chaos_verdicts.py): OpenMM final states bitwise
equal to an uninterrupted run through the same worker code, every AToM-like replica's sample
file the first lines of an uninterrupted run of the same command (each once, in order; the
slowest replica at exactly MAX_SAMPLES), no resume from a stale epoch's checkpoint, every job
completed. Lost allocation seconds come from sacct and worker events.

    flock /tmp/relaymd-testbed.lock .venv/bin/python -m bench.chaos [--seed N] [--short]

The full campaign (~6 min) records its table in docs/benchmarks.md; `--short` is the seeded
variant that tests/daemon/test_chaos_short.py runs in CI. Exit status 1 when a verdict fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import BaseModel

from bench._docs import write_section
from bench.chaos_faults import (
    INJECTORS,
    ChaosWorld,
    FaultKind,
    FaultRecord,
    PlannedFault,
    Undo,
    heal_leftovers,
)
from bench.chaos_jobs import command_reference, openmm_reference, write_atom_job
from bench.chaos_verdicts import (
    Bucket,
    check_fencing,
    check_openmm,
    check_samples,
    completed_events,
    gather,
    lost_time,
)
from relaymd.mailbox.models import EventKind
from tests.daemon.daemon_e2e_support import (
    kill9,
    start_daemon,
    stop_daemon,
    write_spec,
    write_tiny_system,
)
from tests.support.waiting import poll_until
from tests.testbed.testbed import (
    Testbed,
    health_problems,
    load_testbed,
    relay_config,
    s3_client,
    slurm,
    storage_env,
    worker_code_copy,
)

ROOT = Path(__file__).resolve().parents[1]


class ChaosPlan(BaseModel):
    name: str
    seed: int
    openmm_jobs: int
    atom_jobs: int
    openmm_compute_s: float  # MD per OpenMM job, in seconds of one idle core
    atom_samples: int
    atom_cycle_s: float
    atom_replicas: int = 2
    faults: dict[FaultKind, int]
    holds_s: dict[FaultKind, float]
    window_s: tuple[float, float]  # faults are drawn in this span after the daemon starts
    deadline_s: float  # from the daemon's start to every job final
    max_running: int = 4  # allocations per cluster


def full_plan(seed: int) -> ChaosPlan:
    """Eight jobs, fourteen faults, minute-long outages: ~6 min with a healthy relay."""
    return ChaosPlan(
        name="full",
        seed=seed,
        openmm_jobs=3,
        atom_jobs=5,
        openmm_compute_s=30,
        atom_samples=130,
        atom_cycle_s=1.0,
        faults={
            FaultKind.WORKER_KILL: 3,
            FaultKind.ENGINE_KILL: 2,
            FaultKind.SCANCEL: 2,
            FaultKind.NODE_DOWN: 1,
            FaultKind.SSHD_STOP: 1,
            FaultKind.DAEMON_KILL: 1,
            FaultKind.STORE_OUTAGE: 1,
            FaultKind.HEARTBEAT_HALF: 1,
            FaultKind.CHECKPOINT_CORRUPT: 2,
        },
        holds_s={
            FaultKind.NODE_DOWN: 20,
            FaultKind.SSHD_STOP: 40,
            FaultKind.DAEMON_KILL: 60,
            FaultKind.STORE_OUTAGE: 45,
            FaultKind.HEARTBEAT_HALF: 35,
        },
        window_s=(10, 90),
        deadline_s=480,
    )


def short_plan(seed: int) -> ChaosPlan:
    """One fault of each kind, short outages, three jobs: the CI variant (<= 6 min)."""
    return ChaosPlan(
        name="short",
        seed=seed,
        openmm_jobs=1,
        atom_jobs=2,
        openmm_compute_s=20,
        atom_samples=110,
        atom_cycle_s=1.0,
        faults=dict.fromkeys(FaultKind, 1),
        holds_s={
            FaultKind.NODE_DOWN: 5,
            FaultKind.SSHD_STOP: 10,
            FaultKind.DAEMON_KILL: 10,
            FaultKind.STORE_OUTAGE: 10,
            # Longer than daemon.stale_after_s (20 s in relay_config) plus polls: the daemon
            # judges the frozen worker hung and moves its job on before it thaws.
            FaultKind.HEARTBEAT_HALF: 35,
        },
        window_s=(5, 30),
        deadline_s=300,
    )


def schedule(plan: ChaosPlan, clusters: list[str]) -> list[PlannedFault]:
    """The plan's faults at seeded random moments, in time order."""
    rng = random.Random(plan.seed)
    faults = [
        PlannedFault(
            kind=kind,
            at_s=rng.uniform(*plan.window_s),
            pick=rng.random(),
            cluster=rng.choice(clusters),
            hold_s=plan.holds_s.get(kind, 0.0),
        )
        for kind in FaultKind
        for _ in range(plan.faults.get(kind, 0))
    ]
    return sorted(faults, key=lambda f: f.at_s)


class JobResult(BaseModel):
    job_id: str
    engine: str
    completed: bool
    bitwise: bool | None = None  # OpenMM: final state equal to the uninterrupted run
    samples: int = 0
    duplicates: int = 0
    gaps: int = 0
    fallbacks: int = 0


class ChaosReport(BaseModel):
    plan: ChaosPlan
    faults: list[FaultRecord]
    jobs: list[JobResult]
    allocations: int
    allocated_s: float
    kept_s: float
    wall_s: float
    problems: list[str]
    commit: str = "unknown"
    date: str = ""

    @property
    def lost_s(self) -> float:
        return max(0.0, self.allocated_s - self.kept_s)


# -- the campaign ----------------------------------------------------------------------------


class TestbedUnhealthy(RuntimeError):
    pass


def relaymd_slurm_jobs(tb: Testbed) -> list[tuple[str, str, str]]:
    """(cluster, SLURM job id, allocation id) of every RelayMD allocation in squeue."""
    found = []
    for c in tb.clusters:
        for line in slurm(tb, c.name, "squeue", "-h", "-o", "%i %j").splitlines():
            job, _, name = line.partition(" ")
            if name.startswith("relaymd-"):
                found.append((c.name, job, name.removeprefix("relaymd-")))
    return found


def _our_slurm_jobs(tb: Testbed, world: ChaosWorld) -> list[tuple[str, str]]:
    """(cluster, SLURM job id) of this run's allocations still in squeue."""
    ours = {folder.name for _, folder in world.alloc_folders()}
    return [(c, job) for c, job, alloc in relaymd_slurm_jobs(tb) if alloc in ours]


def foreign_cancels(daemon_log: Path, ours: set[str]) -> list[str]:
    """Allocations of another run that this run's daemon cancelled as unknown: proof that
    another daemon used the testbed at the same time (and cancelled ours too)."""
    found = []
    for line in daemon_log.read_text(errors="replace").splitlines():
        if '"orphan_cancel"' not in line:
            continue
        with contextlib.suppress(ValueError):
            alloc = json.loads(line).get("allocation_id", "")
            if alloc and alloc not in ours:
                found.append(alloc)
    return found


def _stop_daemon(world: ChaosWorld) -> None:
    try:
        stop_daemon(world.daemon)
    except subprocess.TimeoutExpired:
        kill9(world.daemon)


def _drain(tb: Testbed, world: ChaosWorld, wait_s: float) -> None:
    """Let idle workers exit on their own, then cancel what is left of this run."""
    deadline = time.monotonic() + wait_s
    while _our_slurm_jobs(tb, world) and time.monotonic() < deadline:
        time.sleep(2)
    for cluster, job in _our_slurm_jobs(tb, world):
        with contextlib.suppress(subprocess.CalledProcessError):
            slurm(tb, cluster, "scancel", job)


def _inject(world: ChaosWorld, fault: PlannedFault, t0: float, pending: list[Undo]) -> FaultRecord:
    record = FaultRecord(kind=fault.kind, planned_at_s=fault.at_s)
    record.at_s = time.monotonic() - t0
    try:
        undo = INJECTORS[fault.kind](world, fault, record)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        # A target that vanished under us (process gone, job left squeue): not injected.
        record.injected, record.note, undo = False, f"injection failed: {exc}", None
    print(f"[{record.at_s:6.1f}s] {fault.kind.value}: {record.target or record.note}", flush=True)
    if undo is not None:
        pending.append(undo)
        time.sleep(fault.hold_s)
        undo()
        pending.remove(undo)  # only once it worked: `finally` retries a failed undo
    return record


def run_campaign(plan: ChaosPlan, root: Path) -> ChaosReport:
    """Run `plan` on the testbed under `root`; the testbed is left as it was found."""
    from relaymd.config import load_config
    from relaymd.secrets import make_secrets_provider, storage_access
    from relaymd.state import StateStore
    from relaymd.storage import open_store
    from relaymd.submission.submit import submit_directory

    tb = load_testbed()
    if tb is None:
        raise TestbedUnhealthy("testbed not up: run tests/testbed/up.sh")
    for healed in heal_leftovers(tb):
        print(f"healed a previous chaos run's leftover: {healed}", flush=True)
    unhealthy = health_problems(tb)
    if unhealthy:
        raise TestbedUnhealthy("testbed unhealthy: " + "; ".join(unhealthy))
    # A daemon cancels SLURM jobs it does not know: another run's would skew both runs.
    # Leftovers of a finished run end within their 1-minute walltime.
    if poll_until(lambda: not relaymd_slurm_jobs(tb), 90, every_s=3) is None:
        raise TestbedUnhealthy(
            "RelayMD SLURM jobs of another run are in squeue: "
            + ", ".join(f"{c}/{j} {n}" for c, j, n in relaymd_slurm_jobs(tb))
            + " (is another testbed run going without flock /tmp/relaymd-testbed.lock?)"
        )

    wall0 = time.monotonic()
    run = f"chaos{secrets.token_hex(4)}"
    code = worker_code_copy()
    config = relay_config(root, tb, run, code)
    for cluster in config["clusters"]:
        cluster["partitions"][0]["max_running"] = plan.max_running
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    os.environ.update(storage_env(tb))
    loaded = load_config(config_path)
    store = open_store(storage_access(loaded.config, make_secrets_provider(loaded.config.secrets)))
    state = StateStore.open(Path(config["state_path"]))
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    bucket_name = config["storage"]["url"].removeprefix("s3://").split("/", 1)[0]
    client = s3_client(tb)

    inputs = root / "inputs"
    rate = write_tiny_system(inputs)
    steps = max(500, int(rate * plan.openmm_compute_s) // 100 * 100)
    totals: dict[str, int] = {}
    engines: dict[str, str] = {}
    openmm_dir = atom_dir = root / "none"
    for i in range(plan.openmm_jobs + plan.atom_jobs):
        job_dir = root / f"job{i}"
        if i < plan.openmm_jobs:
            shutil.copytree(inputs, job_dir)
            write_spec(job_dir, f"chaos openmm {i}", steps, checkpoint_s=5)
            openmm_dir, total, engine = job_dir, steps, "openmm"
        else:
            write_atom_job(
                job_dir,
                f"chaos atom {i}",
                replicas=plan.atom_replicas,
                samples=plan.atom_samples,
                cycle_s=plan.atom_cycle_s,
            )
            atom_dir, total, engine = job_dir, plan.atom_samples, "command"
        job = submit_directory(job_dir, loaded=loaded, store=store, state=state)
        totals[job.id], engines[job.id] = total, engine

    faults = schedule(plan, [c.name for c in tb.clusters])
    records: list[FaultRecord] = []
    pending: list[Undo] = []
    problems: list[str] = []
    pool = ThreadPoolExecutor(max_workers=2)
    ref_openmm = (
        pool.submit(openmm_reference, openmm_dir, root / "ref-openmm", plan.deadline_s)
        if plan.openmm_jobs
        else None
    )
    ref_command = (
        pool.submit(command_reference, atom_dir, root / "ref-atom", plan.deadline_s)
        if plan.atom_jobs
        else None
    )
    world = ChaosWorld(
        tb=tb,
        run=run,
        root=root,
        config=config_path,
        daemon=start_daemon(root, config_path, extra_env=storage_env(tb)),
        bucket=client,
        bucket_name=bucket_name,
        key_prefix="relay/",
        total_steps=totals,
        command_jobs={j for j, e in engines.items() if e == "command"},
    )
    t0 = time.monotonic()

    def all_final() -> bool:
        jobs = [state.get_job(job_id) for job_id in totals]
        return all(j is not None and j.state.is_final for j in jobs)

    world.all_final, world.deadline = all_final, t0 + plan.deadline_s

    try:
        for fault in faults:
            while time.monotonic() - t0 < fault.at_s and not all_final():
                time.sleep(min(1.0, max(0.0, fault.at_s - (time.monotonic() - t0))))
            if all_final():
                records.append(
                    FaultRecord(
                        kind=fault.kind, planned_at_s=fault.at_s, note="every job had ended"
                    )
                )
                continue
            records.append(_inject(world, fault, t0, pending))
        while not all_final() and time.monotonic() - t0 < plan.deadline_s:
            time.sleep(2)
        if not all_final():
            problems.append(f"not every job ended within {plan.deadline_s:.0f} s")
    finally:
        for undo in reversed(pending):
            try:
                undo()
            except Exception as exc:  # keep undoing the rest; report it
                problems.append(f"undoing a fault failed: {exc}")
        _stop_daemon(world)
        _drain(tb, world, 30)
        left = health_problems(tb)
        if left:
            problems.append("testbed left unhealthy: " + "; ".join(left))
        state.close()
        shutil.rmtree(code, ignore_errors=True)

    # -- verdicts, from outputs only ---------------------------------------------------------
    allocs = gather(tb, run)
    foreign = foreign_cancels(root / "daemon.log", {r.allocation_id for r in allocs})
    if foreign:
        problems.append(
            f"another RelayMD run used the testbed meanwhile ({len(foreign)} of its allocations"
            f" cancelled, e.g. {foreign[0]}): the run is not valid; use flock"
        )
    bucket = Bucket(client, bucket_name, "relay/")
    results: list[JobResult] = []
    reference_state, reference_lines = b"", {}
    try:
        reference_state = ref_openmm.result(timeout=600) if ref_openmm else b""
        reference_lines = ref_command.result(timeout=600) if ref_command else {}
    except Exception as exc:  # without a reference the jobs cannot be judged: say why
        problems.append(f"uninterrupted reference run failed: {exc}")
    pool.shutdown()
    for job_id, engine in engines.items():
        result = JobResult(
            job_id=job_id,
            engine=engine,
            completed=bool(completed_events(allocs, job_id)),
            fallbacks=sum(
                1
                for r in allocs
                for e in r.events
                if e.job_id == job_id and e.kind is EventKind.CHECKPOINT_FALLBACK
            ),
        )
        if not result.completed:
            problems.append(f"{job_id} ({engine}): never completed")
        elif engine == "openmm":
            found = check_openmm(bucket, allocs, job_id, totals[job_id], reference_state)
            result.bitwise = not found
            problems += found
        else:
            samples = check_samples(bucket, allocs, job_id, reference_lines, totals[job_id])
            result.samples, result.duplicates, result.gaps = (
                samples.samples,
                samples.duplicates,
                samples.gaps,
            )
            problems += samples.problems
        problems += check_fencing(allocs, job_id, bucket.last_modified)
        results.append(result)
    lost = lost_time(tb, allocs, since)
    return ChaosReport(
        plan=plan,
        faults=records,
        jobs=results,
        allocations=lost.allocations,
        allocated_s=lost.allocated_s,
        kept_s=lost.kept_s,
        wall_s=time.monotonic() - wall0,
        problems=problems,
        commit=_commit(),
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
    )


def _commit() -> str:
    """The checkout's short commit id (dirty marked), so a recorded table names its code."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def render(report: ChaosReport) -> str:
    plan = report.plan
    planned = Counter(f.kind for f in report.faults)
    injected = Counter(f.kind for f in report.faults if f.injected)
    jobs = report.jobs
    openmm = [j for j in jobs if j.engine == "openmm"]
    atom = [j for j in jobs if j.engine == "command"]
    ok = not report.problems
    lines = [
        "## Chaos campaign (`bench/chaos.py`)",
        "",
        f"Two-cluster testbed, 1-minute SLURM allocations, {plan.openmm_jobs} OpenMM jobs"
        f" (Reference platform, water box) and {plan.atom_jobs} AToM-like command jobs"
        f" ({plan.atom_replicas} replicas x {plan.atom_samples} samples), plan `{plan.name}`,"
        f" seed {plan.seed}, code at {report.commit}, {report.date}; wall time"
        f" {report.wall_s / 60:.1f} min. Verdicts from outputs only (bucket bytes, workers'"
        " events, sacct).",
        "",
        "| fault | planned | injected |",
        "|---|---:|---:|",
        *(
            f"| {kind.value} | {planned[kind]} | {injected[kind]} |"
            for kind in FaultKind
            if planned[kind]
        ),
        "",
        "| jobs | completed | OpenMM bitwise equal | samples checked | duplicates | gaps"
        " | checkpoint fallbacks | allocations | allocated s | lost s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(jobs)} | {sum(j.completed for j in jobs)}"
        f" | {sum(bool(j.bitwise) for j in openmm)}/{len(openmm)}"
        f" | {sum(j.samples for j in atom)} | {sum(j.duplicates for j in atom)}"
        f" | {sum(j.gaps for j in atom)} | {sum(j.fallbacks for j in jobs)}"
        f" | {report.allocations} | {report.allocated_s:.0f}"
        f" | {report.lost_s:.0f} ({report.lost_s / max(report.allocated_s, 1):.0%}) |",
        "",
        "Lost s: allocated (sacct elapsed) minus time in segments whose work was kept"
        " (started to terminal event, or to the last checkpoint of a worker that died);"
        " GPU seconds on a GPU cluster.",
        "",
        f"Verdict: {'all checks passed' if ok else 'FAILED'}.",
    ]
    if not ok:
        lines += ["", *(f"- {p}" for p in report.problems)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--short", action="store_true", help="the CI variant")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    plan = short_plan(args.seed) if args.short else full_plan(args.seed)
    root = Path(tempfile.mkdtemp(prefix="relaymd-chaos-"))
    try:
        report = run_campaign(plan, root)
    except TestbedUnhealthy as exc:
        print(f"bench/chaos.py: {exc}", file=sys.stderr)
        return 2
    body = render(report)
    print(body)
    for record in report.faults:
        print(f"  {record.kind.value} @ {record.at_s}: {record.target or record.note}")
    if not args.no_docs and not args.short:
        write_section("chaos", body)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
