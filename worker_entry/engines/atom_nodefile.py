"""AToM-OpenMM's nodefile for the segment's GPUs (ADR 0026).

AToM starts one OpenMM worker per nodefile line, `<node>,<platform>:<device>,<threads>,<arch>,,
<tmp>`; the device index is relative to the CUDA_VISIBLE_DEVICES the engine runs with, so a
job on k devices gets lines 0..k-1. The preset writes it beside AToM's config and points the
config's NODEFILE key at it (AToM resolves paths from the config's folder).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from relaymd.atom_config import AtomConfigError, set_atom_key
from worker_entry.engines.base import EngineFailure

NODEFILE_NAME = "relaymd-nodefile"
ARCHES = {"CUDA": "CUDA", "OpenCL": "OpenCL", "CPU": "CPU", "Reference": "Reference"}


def nodefile_lines(count: int, platform: str | None, tmp_dir: str) -> list[str]:
    arch = ARCHES.get(platform or "CUDA", "CUDA")
    return [f"localhost,0:{i},1,{arch},,{tmp_dir}" for i in range(count)]


def write_nodefile(config: Path, count: int, platform: str | None) -> Path:
    """`count` lines beside `config`, named in its NODEFILE key; the nodefile's path."""
    path = config.parent / NODEFILE_NAME
    lines = nodefile_lines(count, platform, tempfile.gettempdir())
    try:
        path.write_text("\n".join(lines) + "\n")
        set_atom_key(config, "NODEFILE", NODEFILE_NAME)
    except (OSError, AtomConfigError) as exc:
        raise EngineFailure(f"preset atom: cannot write the nodefile for {config}: {exc}") from None
    return path
