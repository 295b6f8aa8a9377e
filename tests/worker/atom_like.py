"""The AToM-like stand-in (examples/atom-like/fake_atom.py) as a relayed `command` job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.worker.worker_harness import EXAMPLES

REPLICAS = 3
PRNT_FREQUENCY = 200


def config(max_samples: int, checkpoint_time_s: float = 0.1, chunk_s: float = 0.01) -> str:
    return f"""# AToM-like production run (keys as in AToM-OpenMM's .cntl files)
JOB_TRANSPORT = 'LOCAL_OPENMM'
BASENAME = 'fake'
TEMPERATURES = '300'
LAMBDAS = '0.00, 0.50, 1.00'
PRODUCTION_STEPS = 100
PRNT_FREQUENCY = {PRNT_FREQUENCY}
MAX_SAMPLES = {max_samples}
CYCLE_TIME = {chunk_s}
CHECKPOINT_TIME = {checkpoint_time_s}
WALL_TIME = 240
"""


def engine(max_samples: int) -> dict[str, object]:
    return {
        "kind": "command",
        "preset": "atom",
        "command": [sys.executable, "fake_atom.py", "atom.cntl"],
        "target_samples": max_samples,
        "settle_s": 0.1,
        "stop_grace_s": 20,
        "startup_timeout_s": 60,
    }


def write_bundle(
    folder: Path, max_samples: int, checkpoint_time_s: float = 0.1, chunk_s: float = 0.01
) -> Path:
    """fake_atom.py and its config; `chunk_s` is the wall time of one replica's MD chunk."""
    folder.mkdir(parents=True)
    shutil.copy(EXAMPLES / "atom-like" / "fake_atom.py", folder)
    (folder / "atom.cntl").write_text(config(max_samples, checkpoint_time_s, chunk_s))
    return folder


def reference_samples(folder: Path, max_samples: int) -> dict[int, bytes]:
    """Sample files of one uninterrupted run, per replica."""
    write_bundle(folder, max_samples)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_ATOM_")}
    subprocess.run(
        [sys.executable, "fake_atom.py", "atom.cntl"], cwd=folder, env=env, check=True, timeout=120
    )
    files = {k: (folder / f"r{k}" / "fake.out").read_bytes() for k in range(REPLICAS)}
    assert all(len(data.splitlines()) == max_samples for data in files.values())
    return files


def reference_run(folder: Path, max_samples: int) -> dict[int, list[bytes]]:
    """An uninterrupted run's sample lines, a few past `max_samples`: AToM stops when the
    slowest replica has MAX_SAMPLES, so a resumed run's faster replicas may hold one more."""
    return {
        k: data.splitlines(keepends=True)
        for k, data in reference_samples(folder, max_samples + 2).items()
    }


def assert_exactly_once(
    files: dict[int, bytes], reference: dict[int, list[bytes]], max_samples: int
) -> None:
    """Every replica's samples, each exactly once and in order (the uninterrupted run's
    lines, from the first), and the slowest replica at exactly `max_samples`."""
    counts = []
    for k, data in files.items():
        lines = data.splitlines(keepends=True)
        assert lines == reference[k][: len(lines)], f"r{k}: not the uninterrupted run's samples"
        counts.append(len(lines))
    assert min(counts) == max_samples, counts
    assert max(counts) <= max_samples + 1, counts
