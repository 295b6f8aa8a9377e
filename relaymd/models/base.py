"""Base classes that fix how strict each kind of data is.

User-written data (config, job specs, cluster profiles) rejects unknown fields so a typo is
named instead of silently ignored. Files exchanged through the mailbox or storage are read
tolerantly, because a worker of a newer version may write fields this daemon does not know.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict


class UserModel(BaseModel):
    """Data a person writes: unknown fields are an error, and so are `.inf` and `.nan`
    (YAML spells them easily; no setting means infinity)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class WireModel(BaseModel):
    """Data a program of possibly another version writes: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")


def utcnow() -> datetime:
    return datetime.now(UTC)
