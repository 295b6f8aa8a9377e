"""Secrets from the daemon's own environment (the default provider)."""

from __future__ import annotations

import os

from relaymd.logging import add_secret
from relaymd.secrets.base import SecretNotFound, SecretsProvider


class EnvSecretsProvider(SecretsProvider):
    description = "the environment (secrets provider `env`)"

    def get(self, name: str) -> str:
        value = os.environ.get(name)
        if not value:
            raise SecretNotFound(
                name,
                self.description,
                f"export {name}=... before starting relaymd (for the systemd unit: put it in "
                "an EnvironmentFile), or use `secrets: {provider: file}` or `infisical`",
            )
        add_secret(value)
        return value
