"""Pick the configured provider, and turn config + secrets into a StorageAccess."""

from __future__ import annotations

from pydantic import SecretStr

from relaymd.logging import add_secret
from relaymd.models import Config, SecretsConfig, StorageAccess
from relaymd.secrets.base import SecretsProvider
from relaymd.secrets.env import EnvSecretsProvider
from relaymd.secrets.file import FileSecretsProvider

# One Infisical provider (one login, one value cache) per settings, for the whole process.
_infisical_providers: dict[str, SecretsProvider] = {}


def make_secrets_provider(config: SecretsConfig) -> SecretsProvider:
    if config.provider == "file":
        assert config.file is not None  # SecretsConfig's validator guarantees it
        return FileSecretsProvider(config.file)
    if config.provider == "infisical":
        assert config.infisical is not None
        from relaymd.secrets.infisical import InfisicalSecretsProvider

        key = config.infisical.model_dump_json()
        if key not in _infisical_providers:
            _infisical_providers[key] = InfisicalSecretsProvider(config.infisical)
        return _infisical_providers[key]
    return EnvSecretsProvider()


def storage_access(config: Config, provider: SecretsProvider) -> StorageAccess:
    """What a store (and, through the `credentials` file, a worker) needs to open storage."""
    storage = config.storage
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    if storage.url.startswith("s3://"):
        access_key = SecretStr(provider.get(storage.access_key_secret))
        secret_key = SecretStr(provider.get(storage.secret_key_secret))
    access = StorageAccess(
        url=storage.url,
        endpoint_url=storage.endpoint_url,
        region=storage.region,
        access_key_id=access_key,
        secret_access_key=secret_key,
        multipart_threshold_mib=storage.multipart_threshold_mib,
        max_attempts=storage.max_attempts,
    )
    # Providers register what they return; this covers any custom provider too.
    for value in access.secret_values():
        add_secret(value)
    return access
