"""The secrets interface: every provider answers `get(name)` or raises `SecretNotFound`."""

from __future__ import annotations

from abc import ABC, abstractmethod


class SecretsError(Exception):
    """A secrets problem the user can fix; the message says where and what to do."""


class SecretNotFound(SecretsError):
    """The provider works but holds no secret of that name."""

    def __init__(self, name: str, provider: str, hint: str) -> None:
        self.name = name
        self.provider = provider
        super().__init__(f"secret {name!r} not found in {provider}; {hint}")


class SecretsProvider(ABC):
    """Where the operator's secrets (storage keys) come from."""

    #: Human-readable description used in error messages, e.g. "the environment".
    description: str

    @abstractmethod
    def get(self, name: str) -> str:
        """The value of secret `name`; raises SecretNotFound when it is absent."""
