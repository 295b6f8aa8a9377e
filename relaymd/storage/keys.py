"""The object-key layout (docs/storage-layout.md). Every key the project uses is built here.

jobs/<job_id>/input/bundle.tar.gz            the job's inputs, immutable
jobs/<job_id>/checkpoints/<epoch>-<seq>/...  checkpoint files, then manifest.json last
jobs/<job_id>/outputs/<epoch>/...            one segment's outputs, never overwritten
jobs/<job_id>/handoff/<epoch>.json           the epoch's handoff checkpoint (ADR 0009)
"""

from __future__ import annotations

import re

MANIFEST_NAME = "manifest.json"
_CHECKPOINT_DIR = re.compile(r"^jobs/(?P<job>[^/]+)/checkpoints/(?P<epoch>\d+)-(?P<seq>\d+)/$")


def job_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/"


def bundle_key(job_id: str) -> str:
    return f"jobs/{job_id}/input/bundle.tar.gz"


def checkpoints_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/checkpoints/"


def checkpoint_prefix(job_id: str, epoch: int, seq: int) -> str:
    # The epoch in the key is what fences a stale writer (invariant 1).
    return f"jobs/{job_id}/checkpoints/{epoch}-{seq}/"


def manifest_key(prefix: str) -> str:
    return prefix + MANIFEST_NAME


def outputs_prefix(job_id: str, epoch: int) -> str:
    return f"jobs/{job_id}/outputs/{epoch}/"


def handoff_key(job_id: str, epoch: int) -> str:
    return f"jobs/{job_id}/handoff/{epoch}.json"


def parse_checkpoint_prefix(prefix: str) -> tuple[str, int, int] | None:
    """(job_id, epoch, seq) of a checkpoint prefix, or None if it is not one."""
    match = _CHECKPOINT_DIR.match(prefix)
    if match is None:
        return None
    return match["job"], int(match["epoch"]), int(match["seq"])
