"""The operator's configuration file (config.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from relaymd.models.base import UserModel
from relaymd.models.cluster import ClusterProfile


class StorageConfig(UserModel):
    """`url` is `s3://bucket/prefix` (B2 through its S3 API) or `file:///absolute/path`."""

    url: str = Field(pattern=r"^(s3://[^/]+(/.*)?|file:///.*)$")
    endpoint_url: str | None = None
    region: str | None = None
    # Names of the secrets (in the secrets provider) holding the S3 key pair.
    access_key_secret: str = "RELAYMD_S3_ACCESS_KEY_ID"
    secret_key_secret: str = "RELAYMD_S3_SECRET_ACCESS_KEY"
    multipart_threshold_mib: int = Field(64, gt=0, le=5 * 1024)
    max_attempts: int = Field(8, gt=0, le=100)


class InfisicalSettings(UserModel):
    site_url: str = "https://app.infisical.com"
    project_id: str
    environment: str = "prod"
    secret_path: str = "/"
    client_id_env: str = "INFISICAL_CLIENT_ID"
    client_secret_env: str = "INFISICAL_CLIENT_SECRET"


class SecretsConfig(UserModel):
    provider: Literal["env", "file", "infisical"] = "env"
    file: str | None = None  # provider `file`: a 0600 YAML/env file of NAME=value
    infisical: InfisicalSettings | None = None

    @model_validator(mode="after")
    def _provider_complete(self) -> SecretsConfig:
        if self.provider == "file" and not self.file:
            raise ValueError("provider `file` needs `file:` (path to a 0600 file)")
        if self.provider == "infisical" and self.infisical is None:
            raise ValueError("provider `infisical` needs an `infisical:` section")
        return self


class DaemonSettings(UserModel):
    # 2.5 default heartbeat intervals: one late beat is forgiven, and with the poll capped at
    # the heartbeat interval a hang is declared at the 3rd poll after the last seq moved.
    stale_after_s: float = Field(75.0, gt=0, le=7 * 86400)
    stop_grace_s: float = Field(120.0, gt=0, le=86400)
    retention_keep: int = Field(3, ge=1)
    queue_racing: bool = False
    idle_poll_interval_s: float | None = None
    # An idle worker gets a job only with at least this long left before its handoff margin:
    # a shorter segment would spend its time staging and hand off at once.
    min_segment_s: float = Field(120.0, ge=0, le=7 * 86400)
    # Allocations of one partition in a row whose worker ended without ever reporting before
    # that partition backs off, and the first wait (doubling per further failure, up to
    # `start_backoff_max_s`).
    start_failures_before_backoff: int = Field(2, ge=1, le=100)
    start_backoff_s: float = Field(60.0, gt=0, le=86400)
    start_backoff_max_s: float = Field(3600.0, gt=0, le=7 * 86400)
    # A successor is pre-written (ADR 0009) for a job whose handoff is due within the poll
    # interval plus this lead.
    prewrite_lead_s: float = Field(60.0, ge=0, le=86400)
    # A moving heartbeat's news (the allocation's seq and the daemon's time it moved, the
    # job's speed) reaches the state file on every Nth heartbeat of each allocation, or with
    # any other change of the row; the daemon decides from every heartbeat (ADR 0027).
    # 1 writes every heartbeat.
    heartbeat_write_every: int = Field(4, ge=1, le=100)


# A worker's handoff margin before it has timed a checkpoint save + upload (then clamped).
INITIAL_HANDOFF_MARGIN_S = 120.0


class WorkerSettings(UserModel):
    heartbeat_interval_s: float = Field(30.0, gt=0, le=3600)
    idle_timeout_s: float = Field(600.0, gt=0, le=7 * 86400)
    handoff_margin_min_s: float = Field(30.0, ge=0, le=86400)
    handoff_margin_max_s: float = Field(900.0, gt=0, le=86400)

    @property
    def initial_margin_s(self) -> float:
        return min(
            self.handoff_margin_max_s, max(self.handoff_margin_min_s, INITIAL_HANDOFF_MARGIN_S)
        )


class Config(UserModel):
    storage: StorageConfig
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    # A profile inline, or the name of a profile in clusters/<name>.yaml.
    clusters: list[ClusterProfile | str] = Field(min_length=1)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    state_path: str | None = None
