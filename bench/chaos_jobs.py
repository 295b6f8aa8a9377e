"""The chaos campaign's jobs and their uninterrupted references (bench/chaos.py).

OpenMM jobs are the tiny Reference-platform water box of the daemon e2e tests; their reference
is one local worker (the same worker code) running the job without a break. AToM-like jobs run
examples/atom-like/fake_atom.py (AToM-OpenMM 8.5's command line `<script> atom.cntl` and file
behaviour) with preset `atom`; their reference is the same command run to the end in a copy of
the job directory, with MAX_SAMPLES raised by REFERENCE_EXTRA so that the lines a resumed run's
faster replicas may legitimately hold past MAX_SAMPLES are in it too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from relaymd.mailbox.models import EventKind
from relaymd.models import CommandSettings, JobSpec, Resources, StorageAccess
from relaymd.storage.checkpoints import download_checkpoint
from tests.worker.worker_harness import Relay

ROOT = Path(__file__).resolve().parents[1]
FAKE_ATOM = ROOT / "examples" / "atom-like" / "fake_atom.py"
ATOM_CONFIG = "atom.cntl"
BASENAME = "fake"
PRODUCTION_STEPS = 100
PRNT_FREQUENCY = 200  # a sample line every second MD chunk, as in examples/atom-like
CHECKPOINT_TIME_S = 5
REFERENCE_EXTRA = 20  # AToM stops when the slowest replica has MAX_SAMPLES; others may be ahead


def atom_command() -> list[str]:
    """The stand-in's command line, as AToM-OpenMM's: `<script> <config>`."""
    return ["python3", FAKE_ATOM.name, ATOM_CONFIG]


def atom_config(replicas: int, samples: int, cycle_s: float) -> str:
    """An AToM `.cntl` config: `replicas` lambda states at one temperature, MAX_SAMPLES
    `samples`; `cycle_s` is the wall time in which every replica adds one sample line."""
    lambdas = ", ".join(f"{k / max(replicas - 1, 1):.2f}" for k in range(replicas))
    chunks_per_sample = PRNT_FREQUENCY // PRODUCTION_STEPS
    chunk_s = cycle_s / (replicas * chunks_per_sample)
    return f"""# AToM-like production run (keys as in AToM-OpenMM's .cntl files)
JOB_TRANSPORT = 'LOCAL_OPENMM'
BASENAME = '{BASENAME}'
TEMPERATURES = '300'
LAMBDAS = '{lambdas}'
PRODUCTION_STEPS = {PRODUCTION_STEPS}
PRNT_FREQUENCY = {PRNT_FREQUENCY}
MAX_SAMPLES = {samples}
# fake_atom.py: seconds of wall time per MD chunk of one replica
CYCLE_TIME = {chunk_s:g}
CHECKPOINT_TIME = {CHECKPOINT_TIME_S}
WALL_TIME = 240
"""


def write_atom_job(
    directory: Path, title: str, *, replicas: int, samples: int, cycle_s: float
) -> None:
    """An AToM-like `command` job (preset atom) as a directory `relaymd submit` takes."""
    directory.mkdir(parents=True)
    shutil.copy(FAKE_ATOM, directory / FAKE_ATOM.name)
    (directory / ATOM_CONFIG).write_text(atom_config(replicas, samples, cycle_s))
    spec = JobSpec(
        title=title,
        engine=CommandSettings(
            command=atom_command(),
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
    alloc = relay.assigned(engine_of(job_dir))
    alloc.start(idle_timeout=1.0)
    end = alloc.wait_event({EventKind.COMPLETED, EventKind.FAILED}, timeout=timeout_s)
    alloc.wait_exit(60)
    if end.kind is not EventKind.COMPLETED or end.checkpoint is None:
        raise RuntimeError(f"uninterrupted OpenMM reference did not complete: {end}")
    download_checkpoint(relay.store, end.checkpoint, root / "final")
    return (root / "final" / "state.xml").read_bytes()


def command_reference(job_dir: Path, root: Path, timeout_s: float) -> dict[str, list[str]]:
    """Sample lines per replica file of the job's command run uninterrupted in a copy of its
    directory, REFERENCE_EXTRA samples past its MAX_SAMPLES (see check_samples)."""
    work = root / "work"
    shutil.copytree(job_dir, work)
    config = work / ATOM_CONFIG
    text, found = re.subn(
        r"^MAX_SAMPLES = (\d+)$",
        lambda m: f"MAX_SAMPLES = {int(m.group(1)) + REFERENCE_EXTRA}",
        config.read_text(),
        flags=re.MULTILINE,
    )
    if found != 1:
        raise ValueError(f"{config}: no single MAX_SAMPLES line")
    config.write_text(text)
    command = CommandSettings.model_validate(engine_of(job_dir)).command
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_ATOM_")}
    subprocess.run(command, cwd=work, env=env, check=True, timeout=timeout_s, capture_output=True)
    return {
        p.relative_to(work).as_posix(): p.read_text().splitlines()
        for p in sorted(work.glob(f"r*/{BASENAME}.out"))
    }
