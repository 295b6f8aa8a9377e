"""The `salad:` section of a `scheduler: salad` cluster profile (ADR 0025)."""

from __future__ import annotations

from pydantic import Field

from relaymd.models.base import UserModel

SALAD_API_URL = "https://api.salad.com/api/public"
DAY_HOURS = 24.0
# SaladCloud's names follow DNS label rules (lowercase, digits, hyphens).
SALAD_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$"


class SaladSettings(UserModel):
    """Where the container group lives, what it runs, and how far it may grow."""

    organization: str = Field(pattern=SALAD_NAME_PATTERN)
    project: str = Field(pattern=SALAD_NAME_PATTERN)
    container_group: str = Field(pattern=SALAD_NAME_PATTERN)
    image: str = Field(min_length=1)  # e.g. ghcr.io/lab/relaymd-worker:1.4
    gpu_classes: list[str] = Field(default_factory=list)  # SaladCloud GPU class ids
    vcpu: int = Field(4, ge=1, le=1024)
    memory_mb: int = Field(16384, ge=1024)
    max_replicas: int = Field(2, ge=0, le=500)
    # Replica-hours one UTC day may start; spent, no more scale-up until midnight UTC.
    budget_replica_hours_per_day: float = Field(24.0, ge=0)
    # A job must wait this long for HPC before Salad starts a replica for it (unless no
    # other cluster can run its image at all).
    wait_before_s: float = Field(1800.0, ge=0)
    # The name of the API key in the secrets provider (env, file or Infisical).
    api_key_secret: str = Field("SALAD_API_KEY", min_length=1)
    api_url: str = SALAD_API_URL
    # The worker's mailbox poll inside the container (seconds between GETs).
    mailbox_poll_s: float = Field(10.0, gt=0, le=3600)
    # More `relaymd-worker` options for every replica (e.g. ["--platform", "CUDA"]).
    worker_args: list[str] = Field(default_factory=list)
