"""Operator-side secrets: storage keys from the environment, a 0600 file, or Infisical.

Every value a provider returns is registered with `relaymd.logging.add_secret`, so no log
line can show it. Workers never import this package: they get a `credentials` file.
"""

from relaymd.secrets.base import SecretNotFound, SecretsError, SecretsProvider
from relaymd.secrets.env import EnvSecretsProvider
from relaymd.secrets.factory import make_secrets_provider, storage_access
from relaymd.secrets.file import FileSecretsProvider

__all__ = [
    "EnvSecretsProvider",
    "FileSecretsProvider",
    "SecretNotFound",
    "SecretsError",
    "SecretsProvider",
    "make_secrets_provider",
    "storage_access",
]
