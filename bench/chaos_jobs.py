"""The chaos campaign's jobs and their uninterrupted references (bench/chaos.py).

OpenMM jobs are the tiny Reference-platform water box of the daemon e2e tests; their reference
is one local worker (the same worker code) running the job without a break. AToM-like jobs run
examples/atom-like/fake_atom.py with preset `atom`; their reference is the same command run to
the end in a copy of the job directory.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from worker_harness import Relay

from relaymd.models import CommandSettings, EventKind, JobSpec, Resources, StorageAccess
from relaymd.storage.checkpoints import download_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAKE_ATOM = ROOT / "examples" / "atom-like" / "fake_atom.py"
ATOM_OUTPUTS = "r*/*.out"  # the sample files of the atom preset


def atom_command(replicas: int, samples: int, cycle_s: float) -> list[str]:
    """The stand-in's command line; a change of its interface is made here only."""
    return [
        "python3",
        FAKE_ATOM.name,
        "--replicas",
        str(replicas),
        "--samples",
        str(samples),
        "--checkpoint-every",
        "5",
        "--cycle-s",
        str(cycle_s),
    ]


def write_atom_job(
    directory: Path, title: str, *, replicas: int, samples: int, cycle_s: float
) -> None:
    """An AToM-like `command` job (preset atom) as a directory `relaymd submit` takes."""
    directory.mkdir(parents=True)
    shutil.copy(FAKE_ATOM, directory / FAKE_ATOM.name)
    spec = JobSpec(
        title=title,
        engine=CommandSettings(
            command=atom_command(replicas, samples, cycle_s),
            preset="atom",
            target_samples=samples,
            settle_s=0.5,
            stop_grace_s=20,
            startup_timeout_s=60,
        ),
        resources=Resources(gpus=0),
        checkpoint_interval_s=5,
        max_retries=3,
    )
    (directory / "relaymd.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))


def engine_of(job_dir: Path) -> dict[str, object]:
    spec = JobSpec.model_validate(yaml.safe_load((job_dir / "relaymd.yaml").read_text()))
    engine: dict[str, object] = spec.engine.model_dump(mode="json")
    return engine


def openmm_reference(job_dir: Path, root: Path, timeout_s: float) -> bytes:
    """Final state.xml of the job run uninterrupted by one local worker (same worker code)."""
    store = root / "store"
    store.mkdir(parents=True)
    relay = Relay(root, StorageAccess(url=store.as_uri()), "reference")
    relay.upload_bundle(job_dir)
    alloc = relay.allocation()
    alloc.assign(relay.assignment(alloc, engine_of(job_dir)))
    alloc.start(idle_timeout=1.0)
    end = alloc.wait_event({EventKind.COMPLETED, EventKind.FAILED}, timeout=timeout_s)
    alloc.wait_exit(60)
    if end.kind is not EventKind.COMPLETED or end.checkpoint is None:
        raise RuntimeError(f"uninterrupted OpenMM reference did not complete: {end}")
    download_checkpoint(relay.store, end.checkpoint, root / "final")
    return (root / "final" / "state.xml").read_bytes()


def command_reference(job_dir: Path, root: Path, timeout_s: float) -> dict[str, list[str]]:
    """Output lines of the job's command run uninterrupted in a copy of its directory."""
    work = root / "work"
    shutil.copytree(job_dir, work)
    command = CommandSettings.model_validate(engine_of(job_dir)).command
    subprocess.run(command, cwd=work, check=True, timeout=timeout_s, capture_output=True)
    return {
        p.relative_to(work).as_posix(): p.read_text().splitlines()
        for p in sorted(work.glob(ATOM_OUTPUTS))
    }
