"""Secrets from Infisical through its Python SDK, with a machine identity (universal auth).

The client id and secret come from environment variables (names in the config), never from
the config file. Values are fetched once and cached for the life of the process.
"""

from __future__ import annotations

import os
from typing import Any

from relaymd.logging import add_secret, get_logger
from relaymd.models import InfisicalSettings
from relaymd.secrets.base import SecretNotFound, SecretsError, SecretsProvider

log = get_logger(__name__)

UNAUTHORIZED = (401, 403)


class _TokenRejected(SecretsError):
    """The access token was refused mid-run (expired): worth one fresh login."""


class InfisicalSecretsProvider(SecretsProvider):
    def __init__(self, settings: InfisicalSettings) -> None:
        self.settings = settings
        self.description = (
            f"Infisical at {settings.site_url} (project {settings.project_id}, environment "
            f"{settings.environment!r}, path {settings.secret_path!r})"
        )
        self._client: Any = None
        self._values: dict[str, str] = {}

    def _credentials(self) -> tuple[str, str]:
        names = (self.settings.client_id_env, self.settings.client_secret_env)
        missing = [n for n in names if not os.environ.get(n)]
        if missing:
            raise SecretsError(
                f"secrets provider `infisical`: environment variable(s) {', '.join(missing)} "
                "not set; export the machine identity's client id and secret (for the systemd "
                "unit: in its EnvironmentFile), or change `secrets.infisical.client_id_env` / "
                "`client_secret_env`"
            )
        client_id, client_secret = (os.environ[n] for n in names)
        add_secret(client_secret)
        return client_id, client_secret

    def _login(self) -> Any:
        # Imported here: the SDK pulls in `requests`, which `relaymd status` never needs.
        from infisical_sdk import InfisicalError, InfisicalSDKClient

        client_id, client_secret = self._credentials()
        # cache_ttl=None: this class caches, and the SDK's cache would start a thread.
        client = InfisicalSDKClient(host=self.settings.site_url, cache_ttl=None)
        try:
            client.auth.universal_auth.login(client_id=client_id, client_secret=client_secret)
        except InfisicalError as exc:
            status = getattr(exc, "status_code", None)
            if status in UNAUTHORIZED or status == 400:
                raise SecretsError(
                    f"Infisical at {self.settings.site_url} rejected the machine identity login "
                    f"(client id from ${self.settings.client_id_env}, HTTP {status}); check "
                    f"${self.settings.client_id_env} and ${self.settings.client_secret_env} "
                    "and that universal auth is enabled for that identity"
                ) from None
            raise SecretsError(
                f"Infisical at {self.settings.site_url}: login failed ({exc}); check "
                "`secrets.infisical.site_url` and that the server is reachable"
            ) from None
        except OSError as exc:
            raise SecretsError(
                f"Infisical at {self.settings.site_url} is unreachable ({type(exc).__name__}); "
                "check `secrets.infisical.site_url` and the network"
            ) from None
        add_secret(client.get_token())
        log.info("infisical_login", site_url=self.settings.site_url, client_id=client_id)
        return client

    def _fetch(self, name: str) -> str:
        from infisical_sdk import InfisicalError

        if self._client is None:
            self._client = self._login()
        try:
            secret = self._client.secrets.get_secret_by_name(
                secret_name=name,
                project_id=self.settings.project_id,
                environment_slug=self.settings.environment,
                secret_path=self.settings.secret_path,
            )
        except InfisicalError as exc:
            status = getattr(exc, "status_code", None)
            if status == 404:
                raise SecretNotFound(
                    name,
                    self.description,
                    "create it there, or point `storage.access_key_secret` / "
                    "`secret_key_secret` at the name you use",
                ) from None
            if status == 401:
                raise _TokenRejected(
                    f"{self.description}: access token rejected (HTTP 401) right after login; "
                    "check the machine identity's access to this project"
                ) from None
            if status == 403:
                raise SecretsError(
                    f"{self.description}: access to secret {name!r} denied (HTTP 403); "
                    "give the machine identity read access to this project and environment"
                ) from None
            raise SecretsError(
                f"{self.description}: reading secret {name!r} failed ({exc})"
            ) from None
        value = str(secret.secretValue)
        add_secret(value)
        return value

    def get(self, name: str) -> str:
        if name not in self._values:
            try:
                self._values[name] = self._fetch(name)
            except _TokenRejected:
                # The access token expired (a long-running daemon): log in again, once.
                self._client = None
                self._values[name] = self._fetch(name)
            log.info("secret_fetched", provider="infisical", name=name)
        value = self._values[name]
        if not value:
            raise SecretNotFound(name, self.description, "give it a non-empty value")
        return value
