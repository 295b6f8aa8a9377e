"""Cluster profiles: clusters are data (clusters/*.yaml)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from relaymd.models.base import UserModel
from relaymd.models.salad import SaladSettings
from relaymd.models.slurm_time import hours_form, parse_slurm_time

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# One `#SBATCH` token: sbatch splits these lines on whitespace, so a space or quote could
# smuggle in another option. relaymd.scheduler.shell applies the same rule when rendering.
SBATCH_TOKEN = re.compile(r"^[^\s'\"\\`\x00-\x1f\x7f]+$")
# Bounds that refuse absurd values at load time instead of at the worker (or in sbatch).
MAX_WALLTIME_MINUTES = 30 * 24 * 60
DAY_S = 86400.0


def _sbatch_word(field: str, value: str | None) -> str | None:
    if value is not None and not SBATCH_TOKEN.match(value):
        raise ValueError(
            f"{value!r} cannot go into an #SBATCH line: use one word without spaces, quotes, "
            "backslashes, backticks or line breaks"
        )
    return value


class ImageLocation(UserModel):
    """Where a worker image profile lives on one cluster: a .sif on shared storage or a URI."""

    sif: str | None = None
    uri: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ImageLocation:
        if (self.sif is None) == (self.uri is None):
            raise ValueError("give exactly one of `sif` (a path) or `uri` (e.g. docker://...)")
        return self


class Partition(UserModel):
    name: str = Field(pattern=NAME_PATTERN)
    # Fractions allowed (the embedded demo uses 30-second segments); SLURM gets HH:MM:SS.
    walltime_minutes: float = Field(gt=0, le=MAX_WALLTIME_MINUTES)
    gpus_per_allocation: int = Field(1, ge=0, le=64)
    gpu_type: str | None = None
    cpus_per_task: int = Field(1, gt=0, le=4096)
    memory: str | None = None  # e.g. "16G", passed to --mem
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra_sbatch: list[str] = Field(default_factory=list)
    max_pending: int = Field(2, ge=0, le=1000)
    max_running: int = Field(4, ge=0, le=1000)
    preemptible: bool = False
    # Multi-GPU allocations carry one slot per GPU (ADR 0026). Request one only when waiting
    # jobs need at least `min_fill` of its GPUs (rounded up), or once the oldest waiting job
    # that fits has waited `fill_wait_s`.
    min_fill: float = Field(0.75, gt=0, le=1)
    fill_wait_s: float = Field(600.0, ge=0)

    @field_validator("gpu_type", "memory", "account", "qos", "constraint")
    @classmethod
    def _one_sbatch_word(cls, value: str | None) -> str | None:
        return _sbatch_word("value", value)

    @field_validator("extra_sbatch")
    @classmethod
    def _sbatch_options(cls, value: list[str]) -> list[str]:
        for line in value:
            _sbatch_word("extra_sbatch", line)
            if not line.startswith("-"):
                raise ValueError(f"{line!r} must be an sbatch option starting with `-`")
        return value

    @model_validator(mode="before")
    @classmethod
    def _walltime_in_slurm_form(cls, data: Any) -> Any:
        # `walltime:` takes SLURM's --time forms; it is kept as walltime_minutes.
        if not isinstance(data, dict) or "walltime" not in data:
            return data
        if "walltime_minutes" in data:
            raise ValueError("give `walltime` or `walltime_minutes`, not both")
        rest = {k: v for k, v in data.items() if k != "walltime"}
        written = data["walltime"]
        if isinstance(written, bool) or not isinstance(written, int | float | str):
            raise ValueError(f"walltime {written!r} is not a SLURM time")
        minutes = float(written) if not isinstance(written, str) else parse_slurm_time(written)
        if minutes <= 0:
            raise ValueError("walltime must be longer than zero")
        return {**rest, "walltime_minutes": minutes}

    @field_validator("walltime_minutes", mode="before")
    @classmethod
    def _minutes_not_clock(cls, value: Any) -> Any:
        # The config loader keeps `4:00:00` as text (YAML 1.1 would read base-60 14400).
        if isinstance(value, str) and ":" in value:
            raise ValueError(
                f"walltime_minutes takes a number of minutes; for SLURM's time formats "
                f'write walltime: "{hours_form(value)}"'
            )
        return value

    @property
    def walltime_s(self) -> int:
        """Whole seconds, at least one (what an allocation of this partition records)."""
        return max(1, round(self.walltime_minutes * 60))


class SSHSettings(UserModel):
    """`host` may be an alias from ~/.ssh/config; unset fields come from there."""

    host: str
    port: int | None = None
    username: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    proxy_jump: str | None = None
    keepalive_s: float = Field(30.0, gt=0, le=DAY_S)
    connect_timeout_s: float = Field(20.0, gt=0, le=DAY_S)


class PollSettings(UserModel):
    min_interval_s: float = Field(5.0, gt=0, le=DAY_S)
    max_interval_s: float = Field(60.0, gt=0, le=DAY_S)


class ClusterProfile(UserModel):
    name: str = Field(pattern=NAME_PATTERN)
    transport: Literal["ssh", "local"] = "ssh"
    ssh: SSHSettings | None = None
    # `storage`: workers without shared scratch that join through the job bucket (ADR 0022):
    # no transport, no submits, allocations adopted from their mailbox's first heartbeat.
    # `salad`: a `storage` cluster whose workers SaladCloud starts (ADR 0025, `salad:`).
    scheduler: Literal["slurm", "direct", "storage", "salad"] = "slurm"
    salad: SaladSettings | None = None
    scratch: str = ""  # required but for `storage`
    partitions: list[Partition] = Field(min_length=1)
    images: dict[str, ImageLocation] = Field(default_factory=dict)
    # Runs the worker without a container (tests, workstations): argv before the worker args.
    native_worker: list[str] | None = None
    setup: list[str] = Field(default_factory=list)  # e.g. "module load apptainer"
    # A site's own job-script template (a path on this workstation; relative to the config
    # file). Unset: `templates/<name>.sbatch.j2` in the config folder, else the shipped one.
    template: str | None = None
    apptainer: str = "apptainer"
    preferred_gpus: list[str] = Field(default_factory=list)
    max_channels: int = Field(8, gt=0, le=1024)
    command_timeout_s: float = Field(60.0, gt=0, le=DAY_S)
    poll: PollSettings = Field(default_factory=PollSettings)
    enabled: bool = True
    # Direct scheduler only: how many workers may run at once on the host.
    max_workers: int = Field(2, gt=0, le=1024)

    @model_validator(mode="after")
    def _transport_complete(self) -> ClusterProfile:
        if self.scheduler == "salad" and self.salad is None:
            raise ValueError("scheduler `salad` needs a `salad:` section (organization, ...)")
        if self.scheduler in ("storage", "salad"):
            return self  # reached through the bucket: no login node, scratch or job script
        if not self.scratch:
            raise ValueError("give `scratch:` (where the allocations' mailbox folders live)")
        if self.transport == "ssh" and self.ssh is None:
            raise ValueError("transport `ssh` needs an `ssh:` section with at least `host`")
        if self.native_worker is None and not self.images:
            raise ValueError("give `images` (where each worker image lives) or `native_worker`")
        return self

    def partition(self, name: str) -> Partition:
        for partition in self.partitions:
            if partition.name == name:
                return partition
        raise KeyError(name)
