"""The worker's settings (argv + environment) and how its allocation deadline is found."""

from __future__ import annotations

import os
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

PLATFORMS = ("CUDA", "OpenCL", "CPU", "Reference")


class WorkerOptions(BaseModel):
    alloc_dir: Path
    deadline: datetime | None = None
    # Seconds before the end at which SLURM's walltime warning (SIGUSR1) is requested.
    warning_lead_s: float | None = Field(None, gt=0)
    heartbeat_interval_s: float = Field(30.0, gt=0)
    idle_timeout_s: float = Field(600.0, gt=0)
    margin_min_s: float = Field(30.0, ge=0)
    margin_max_s: float = Field(900.0, ge=0)
    platform: str | None = None
    work_dir: Path | None = None
    poll_interval_s: float = Field(0.5, gt=0)
    # --mailbox: the mailbox is in object storage, alloc_dir is a private local copy (ADR 0022).
    mailbox_url: str | None = None
    mailbox_poll_s: float = Field(10.0, gt=0)

    @property
    def allocation_id(self) -> str:
        return self.alloc_dir.name

    def resolved_work_dir(self) -> Path:
        if self.work_dir is not None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            return self.work_dir
        base = os.environ.get("TMPDIR") or tempfile.gettempdir()
        return Path(tempfile.mkdtemp(prefix=f"relaymd-{self.allocation_id}-", dir=base))


class DeadlineError(ValueError):
    pass


def parse_deadline(text: str) -> datetime | None:
    """ISO-8601 (naive means local time) or a unix epoch; SLURM's N/A/Unknown mean none."""
    value = text.strip()
    if not value or value.upper() in ("N/A", "UNKNOWN", "NONE", "INVALID", "UNLIMITED"):
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise DeadlineError(
            f"deadline {value!r} is neither ISO-8601 (2025-01-31T18:00:00+00:00) nor a unix time"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # SLURM prints local time without a zone
    return parsed.astimezone(UTC)


def _squeue_end_time(slurm_job_id: str) -> str | None:
    try:
        done = subprocess.run(
            ["squeue", "-h", "-j", slurm_job_id, "-o", "%e"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0] if done.returncode == 0 and lines else None


def resolve_deadline(cli_value: str | None, env: dict[str, str]) -> datetime | None:
    """--deadline, else RELAYMD_DEADLINE, else SLURM_JOB_END_TIME, else squeue, else none."""
    for candidate in (cli_value, env.get("RELAYMD_DEADLINE")):
        if candidate:
            return parse_deadline(candidate)
    if env.get("SLURM_JOB_END_TIME"):
        return parse_deadline(env["SLURM_JOB_END_TIME"])
    if env.get("SLURM_JOB_ID"):
        text = _squeue_end_time(env["SLURM_JOB_ID"])
        if text:
            try:
                return parse_deadline(text)
            except DeadlineError:
                return None
    return None
