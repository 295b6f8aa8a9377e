"""Open the configured object store for CLI commands (secrets resolved lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relaymd.cli.errors import CliError, ExitCode

if TYPE_CHECKING:
    from relaymd.config import LoadedConfig
    from relaymd.models import StorageAccess
    from relaymd.storage.base import ObjectStore


def storage_access(loaded: LoadedConfig) -> StorageAccess:
    from relaymd.secrets import make_secrets_provider, storage_access

    try:
        provider = make_secrets_provider(loaded.config.secrets)
        return storage_access(loaded.config, provider)
    except Exception as exc:  # provider errors name the missing secret
        raise CliError(
            f"cannot get storage credentials: {exc}",
            hint="set the secrets named in `secrets:`/`storage:` of the config "
            "(docs/configuration.md)",
            code=ExitCode.USAGE,
        ) from None


def open_object_store(loaded: LoadedConfig) -> ObjectStore:
    from relaymd.storage import open_store

    return open_store(storage_access(loaded))
