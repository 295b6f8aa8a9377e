"""The allocation's `credentials` file: a StorageAccess JSON that only the owner may read."""

from __future__ import annotations

import stat
from pathlib import Path

from pydantic import ValidationError

from relaymd.mailbox.layout import CREDENTIALS_FILE
from relaymd.models import StorageAccess
from worker_entry.logging import add_secret


class CredentialsError(Exception):
    pass


def load_credentials(alloc_dir: Path) -> StorageAccess:
    path = alloc_dir / CREDENTIALS_FILE
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CredentialsError(
            f"{path} is missing; the daemon writes it before submitting the allocation"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{path} is readable by group/others (mode {stat.S_IMODE(mode):04o}); "
            f"refusing to use storage credentials others can read: run `chmod 600 {path}`"
        )
    try:
        access = StorageAccess.model_validate_json(path.read_bytes())
    except (ValidationError, ValueError) as exc:
        raise CredentialsError(f"{path} is not a valid StorageAccess JSON: {exc}") from None
    for secret in access.secret_values():
        add_secret(secret)
    return access
