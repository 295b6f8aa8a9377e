"""The SaladCloud API key of each `salad` cluster, from the configured secrets provider
(env, file or Infisical). Registered with the log redactor so it can never be printed."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import SecretStr

from relaymd.logging import add_secret
from relaymd.models import ClusterProfile
from relaymd.secrets.base import SecretsProvider


def salad_api_key(profile: ClusterProfile, provider: SecretsProvider) -> SecretStr:
    """Raises SecretNotFound (naming the secret and the provider) when it is absent."""
    assert profile.salad is not None
    value = provider.get(profile.salad.api_key_secret)
    add_secret(value)
    return SecretStr(value)


def salad_api_keys(
    clusters: Iterable[ClusterProfile], provider: SecretsProvider
) -> dict[str, SecretStr]:
    return {p.name: salad_api_key(p, provider) for p in clusters if p.scheduler == "salad"}
