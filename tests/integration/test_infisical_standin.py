"""The Infisical provider through the real SDK against a local stand-in of Infisical's API."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from relaymd.logging import configure, get_logger
from relaymd.models import Config, InfisicalSettings, SecretsConfig, StorageConfig
from relaymd.secrets import SecretNotFound, SecretsError, make_secrets_provider, storage_access
from tests.infisical_standin import InfisicalStandin

CLIENT_ID = "machine-identity-7f3a"
CLIENT_SECRET = "ua-client-secret-0d9c1e5b"
ACCESS_KEY = "004a1b2c3d4e5f60000000001"
SECRET_KEY = "K004sEcReTvAlUe+/xyzXYZ0123456789ab"


@pytest.fixture
def standin() -> Iterator[InfisicalStandin]:
    server = InfisicalStandin(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        project_id="proj-relaymd",
        secrets_by_folder={
            ("prod", "/relaymd"): {
                "B2_KEY_ID": ACCESS_KEY,
                "B2_APPLICATION_KEY": SECRET_KEY,
            }
        },
    )
    with server.running():
        yield server


def _config(standin: InfisicalStandin) -> Config:
    return Config(
        storage=StorageConfig(
            url="s3://relaymd-bucket/runs",
            endpoint_url="https://s3.us-west-004.backblazeb2.com",
            access_key_secret="B2_KEY_ID",
            secret_key_secret="B2_APPLICATION_KEY",
        ),
        secrets=SecretsConfig(
            provider="infisical",
            infisical=InfisicalSettings(
                site_url=standin.url,
                project_id="proj-relaymd",
                environment="prod",
                secret_path="/relaymd",
            ),
        ),
        clusters=["clusterA"],
    )


@pytest.fixture
def identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFISICAL_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("INFISICAL_CLIENT_SECRET", CLIENT_SECRET)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure(level="DEBUG", stream=stream)
    yield stream
    configure()


def test_storage_access_fetches_both_keys_once_per_process(
    standin: InfisicalStandin,
    identity: None,
    log_stream: io.StringIO,
    capfd: pytest.CaptureFixture[str],
) -> None:
    config = _config(standin)
    access = storage_access(config, make_secrets_provider(config.secrets))
    assert access.access_key_id is not None and access.secret_access_key is not None
    assert access.access_key_id.get_secret_value() == ACCESS_KEY
    assert access.secret_access_key.get_secret_value() == SECRET_KEY
    assert access.endpoint_url == "https://s3.us-west-004.backblazeb2.com"

    # A second lookup (e.g. the next allocation's credentials file) hits no server.
    storage_access(config, make_secrets_provider(config.secrets))
    assert standin.hits == {"login": 1, "get:B2_KEY_ID": 1, "get:B2_APPLICATION_KEY": 1}

    # Even a careless log call cannot leak them.
    get_logger("test").warning("oops", access=access.credentials_json(), raw=[SECRET_KEY])
    logged = log_stream.getvalue() + "".join(capfd.readouterr())
    assert "infisical_login" in logged and "**redacted**" in logged
    for value in (ACCESS_KEY, SECRET_KEY, CLIENT_SECRET, *standin.tokens):
        assert value not in logged


def test_wrong_client_secret_is_a_clear_error(
    standin: InfisicalStandin, identity: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFISICAL_CLIENT_SECRET", "not-the-right-secret")
    config = _config(standin)
    with pytest.raises(SecretsError) as raised:
        make_secrets_provider(config.secrets).get("B2_KEY_ID")
    message = str(raised.value)
    assert "rejected the machine identity login" in message
    assert "$INFISICAL_CLIENT_SECRET" in message and standin.url in message
    assert "not-the-right-secret" not in message
    assert standin.hits == {"login": 1}


def test_missing_client_credentials_name_the_variables(
    standin: InfisicalStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INFISICAL_CLIENT_ID", raising=False)
    monkeypatch.delenv("INFISICAL_CLIENT_SECRET", raising=False)
    with pytest.raises(SecretsError, match="INFISICAL_CLIENT_ID, INFISICAL_CLIENT_SECRET"):
        make_secrets_provider(_config(standin).secrets).get("B2_KEY_ID")
    assert standin.hits == {}


def test_missing_secret_raises_secret_not_found(standin: InfisicalStandin, identity: None) -> None:
    provider = make_secrets_provider(_config(standin).secrets)
    with pytest.raises(SecretNotFound) as raised:
        provider.get("NO_SUCH_KEY")
    assert raised.value.name == "NO_SUCH_KEY"
    assert "NO_SUCH_KEY" in str(raised.value) and "Infisical at" in str(raised.value)
    assert "/relaymd" in str(raised.value)
    # The other secrets still work through the same login.
    assert provider.get("B2_KEY_ID") == ACCESS_KEY
    assert standin.hits["login"] == 1


def test_expired_token_logs_in_again(standin: InfisicalStandin, identity: None) -> None:
    provider = make_secrets_provider(_config(standin).secrets)
    assert provider.get("B2_KEY_ID") == ACCESS_KEY
    standin.tokens.clear()  # the server forgets every token, as when one expires
    assert provider.get("B2_APPLICATION_KEY") == SECRET_KEY
    assert standin.hits["login"] == 2 and standin.hits["unauthorized"] == 1
