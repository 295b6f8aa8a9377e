"""The env and file secrets providers, the factory, and StorageAccess from config."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from relaymd.logging import configure, get_logger
from relaymd.models import Config, SecretsConfig, StorageConfig
from relaymd.secrets import (
    EnvSecretsProvider,
    FileSecretsProvider,
    SecretNotFound,
    SecretsError,
    SecretsProvider,
    make_secrets_provider,
    storage_access,
)


class _Recording(SecretsProvider):
    description = "a test dictionary"

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: list[str] = []

    def get(self, name: str) -> str:
        self.asked.append(name)
        if name not in self.values:
            raise SecretNotFound(name, self.description, "add it")
        return self.values[name]


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_env_provider_reads_and_names_missing_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYMD_TEST_SECRET", "s3cr3t-value")
    monkeypatch.delenv("RELAYMD_ABSENT", raising=False)
    provider = EnvSecretsProvider()
    assert provider.get("RELAYMD_TEST_SECRET") == "s3cr3t-value"
    with pytest.raises(SecretNotFound, match=r"'RELAYMD_ABSENT' not found in the environment.*"):
        provider.get("RELAYMD_ABSENT")


def test_file_provider_reads_dotenv(tmp_path: Path) -> None:
    path = _private(
        tmp_path / "secrets.env",
        "# B2 keys\n\nexport KEY_ID=004abc\nAPP_KEY = 'K004/with=equals'\nQUOTED=\"x y\"\n",
    )
    provider = FileSecretsProvider(path)
    assert provider.get("KEY_ID") == "004abc"
    assert provider.get("APP_KEY") == "K004/with=equals"
    assert provider.get("QUOTED") == "x y"
    with pytest.raises(SecretNotFound) as raised:
        provider.get("NOPE")
    assert str(path) in str(raised.value) and "`NOPE=...`" in str(raised.value)


def test_file_provider_reads_yaml(tmp_path: Path) -> None:
    path = _private(tmp_path / "secrets.yaml", "KEY_ID: 004abc\nAPP_KEY: K004xyz\n")
    assert FileSecretsProvider(path).get("APP_KEY") == "K004xyz"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_file_provider_refuses_a_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = _private(tmp_path / "secrets.env", "KEY_ID=004abc\n")
    path.chmod(mode)
    with pytest.raises(SecretsError, match=rf"chmod 600 {path}") as raised:
        FileSecretsProvider(path).get("KEY_ID")
    assert f"mode {mode:o}" in str(raised.value)


def test_file_provider_errors_never_echo_values(tmp_path: Path) -> None:
    path = _private(tmp_path / "secrets.env", "KEY_ID=004abc\nthis-line-is-a-leaked-key\n")
    with pytest.raises(SecretsError) as raised:
        FileSecretsProvider(path).get("KEY_ID")
    assert f"{path}:2: expected NAME=value" in str(raised.value)
    assert "leaked" not in str(raised.value)
    with pytest.raises(SecretsError, match="secrets file not found"):
        FileSecretsProvider(tmp_path / "absent.env").get("KEY_ID")


def test_factory_picks_the_configured_provider(tmp_path: Path) -> None:
    assert isinstance(make_secrets_provider(SecretsConfig()), EnvSecretsProvider)
    path = _private(tmp_path / "s.env", "A=1234\n")
    provider = make_secrets_provider(SecretsConfig(provider="file", file=str(path)))
    assert isinstance(provider, FileSecretsProvider) and provider.get("A") == "1234"


def test_file_storage_needs_no_secrets() -> None:
    config = Config(storage=StorageConfig(url="file:///srv/relaymd"), clusters=["local"])
    provider = _Recording({})
    access = storage_access(config, provider)
    assert provider.asked == []
    assert access.url == "file:///srv/relaymd" and access.secret_values() == []


def test_s3_storage_fetches_the_named_secrets_and_redacts_them() -> None:
    config = Config(
        storage=StorageConfig(
            url="s3://bucket/prefix",
            endpoint_url="https://s3.us-west-004.backblazeb2.com",
            access_key_secret="MY_KEY_ID",
            secret_key_secret="MY_APP_KEY",
            max_attempts=12,
        ),
        clusters=["clusterA"],
    )
    provider = _Recording({"MY_KEY_ID": "custom-key-id-77", "MY_APP_KEY": "custom-app-key-88"})
    access = storage_access(config, provider)
    assert provider.asked == ["MY_KEY_ID", "MY_APP_KEY"]
    assert access.secret_values() == ["custom-key-id-77", "custom-app-key-88"]
    assert access.max_attempts == 12

    stream = io.StringIO()
    configure(stream=stream)
    try:
        get_logger("test").info("leak_attempt", creds=access.credentials_json())
    finally:
        configure()
    assert "custom-app-key-88" not in stream.getvalue()
    assert "custom-key-id-77" not in stream.getvalue()


def test_s3_storage_with_a_missing_secret_names_it() -> None:
    config = Config(storage=StorageConfig(url="s3://bucket"), clusters=["clusterA"])
    with pytest.raises(SecretNotFound, match="RELAYMD_S3_ACCESS_KEY_ID"):
        storage_access(config, _Recording({}))
