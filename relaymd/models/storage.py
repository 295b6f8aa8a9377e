"""References to immutable objects in storage."""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import Field, SecretStr

from relaymd.models.base import WireModel, utcnow


class ObjectRef(WireModel):
    key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class ManifestFile(WireModel):
    """One file of a checkpoint; `path` is relative to the checkpoint prefix."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class OutputsManifest(WireModel):
    """`outputs/<epoch>/manifest.json`: every output file of one segment with its sha256.

    Rewritten by the segment's one writer after each batch of files, so downloads can verify
    what they fetch; a file uploaded but not yet listed is simply not verified.
    """

    job_id: str
    epoch: int = Field(ge=0)
    files: list[ManifestFile] = Field(default_factory=list)
    updated_at: datetime = Field(default_factory=utcnow)


class CheckpointManifest(WireModel):
    """`manifest.json`, written last: a checkpoint without one does not exist."""

    job_id: str
    epoch: int = Field(ge=0)
    seq: int = Field(ge=0)
    step: int = Field(ge=0)
    engine: str
    platform: str | None = None
    engine_version: str | None = None
    files: list[ManifestFile]
    created_at: datetime = Field(default_factory=utcnow)


class CheckpointRef(WireModel):
    """Where a verified checkpoint lives, as the daemon's resume pointer records it."""

    epoch: int = Field(ge=0)
    seq: int = Field(ge=0)
    step: int = Field(ge=0)
    prefix: str
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class HandoffMarker(WireModel):
    """`jobs/<job>/handoff/<epoch>.json`: written by the epoch's worker after its handoff
    checkpoint verified, before its `handoff` event; a pre-written successor polls for it."""

    job_id: str
    epoch: int = Field(ge=1)
    checkpoint: CheckpointRef
    written_at: datetime = Field(default_factory=utcnow)


class StorageAccess(WireModel):
    """Everything needed to open a store: the daemon builds it from config + secrets and
    hands it to workers only through the 0600 `credentials` file in their allocation folder.
    """

    url: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    multipart_threshold_mib: int = Field(64, gt=0)
    max_attempts: int = Field(8, gt=0)

    def credentials_json(self) -> str:
        """The `credentials` file content: the one place secrets are written out in clear."""
        data = self.model_dump(mode="json")
        for name in ("access_key_id", "secret_access_key"):
            secret: SecretStr | None = getattr(self, name)
            data[name] = secret.get_secret_value() if secret else None
        return json.dumps(data)

    def secret_values(self) -> list[str]:
        """The values a log must never show."""
        return [s.get_secret_value() for s in (self.access_key_id, self.secret_access_key) if s]
