"""Secrets from a private file: dotenv-style `NAME=value` lines, or a YAML mapping."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from relaymd.logging import add_secret
from relaymd.secrets.base import SecretNotFound, SecretsError, SecretsProvider

YAML_SUFFIXES = (".yaml", ".yml")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_dotenv(text: str, source: Path) -> dict[str, str]:
    """`NAME=value` per line; blank lines, `# comments` and an `export ` prefix are allowed."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name or not name.replace("_", "").isalnum():
            # Never echo the line: it may hold a secret.
            raise SecretsError(f"{source}:{number}: expected NAME=value (a secret per line)")
        values[name] = _unquote(value.strip())
    return values


def parse_yaml(text: str, source: Path) -> dict[str, str]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise SecretsError(f"{source}: not valid YAML (expected a mapping NAME: value)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SecretsError(f"{source}: expected a mapping NAME: value at the top level")
    values: dict[str, str] = {}
    for name, value in data.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise SecretsError(f"{source}: secret {name!r} must be a string")
        values[str(name)] = str(value)
    return values


class FileSecretsProvider(SecretsProvider):
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        self.description = f"the secrets file {self.path} (secrets provider `file`)"
        self._values: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            raise SecretsError(
                f"{self.path}: secrets file not found (config `secrets.file`); create it with "
                "one NAME=value per line and `chmod 600` it"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretsError(
                f"{self.path}: secrets file is readable or writable by group/others "
                f"(mode {stat.S_IMODE(mode):o}); run `chmod 600 {self.path}`"
            )
        try:
            text = self.path.read_text()
        except PermissionError:
            raise SecretsError(
                f"{self.path}: cannot read the secrets file (permission denied)"
            ) from None
        parse = parse_yaml if self.path.suffix in YAML_SUFFIXES else parse_dotenv
        values = parse(text, self.path)
        for value in values.values():
            add_secret(value)
        return values

    def get(self, name: str) -> str:
        if self._values is None:
            self._values = self._load()
        value = self._values.get(name)
        if not value:
            raise SecretNotFound(name, self.description, f"add a line `{name}=...` to {self.path}")
        return value
