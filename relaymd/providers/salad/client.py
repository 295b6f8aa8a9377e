"""A small HTTP client for the SaladCloud endpoints the provider uses (ADR 0025: why not the
SDK). Synchronous (urllib); the daemon calls it through asyncio.to_thread. The API key goes
in the `Salad-Api-Key` header only and never into a message or a log line."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import TypeVar
from urllib.parse import quote

from pydantic import BaseModel, SecretStr, ValidationError

from relaymd.models.salad import SaladSettings
from relaymd.providers.salad.api_models import (
    ContainerGroup,
    GpuClassList,
    GroupCreation,
    GroupList,
    GroupPatch,
    InstanceList,
)

M = TypeVar("M", bound=BaseModel)
TIMEOUT_S = 30.0
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class SaladError(Exception):
    """A failed call: `status` is the HTTP status (0 when the API was not reached)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class SaladClient:
    def __init__(self, settings: SaladSettings, api_key: SecretStr) -> None:
        self.settings, self._key = settings, api_key
        org, project = quote(settings.organization), quote(settings.project)
        self._org = f"{settings.api_url.rstrip('/')}/organizations/{org}"
        self._project = f"{self._org}/projects/{project}"
        self._group = f"{self._project}/containers/{quote(settings.container_group)}"

    def _call(
        self, method: str, url: str, body: BaseModel | None = None, content_type: str = ""
    ) -> bytes:
        data = None if body is None else body.model_dump_json(exclude_none=True).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Salad-Api-Key", self._key.get_secret_value())
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type or "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return bytes(response.read(MAX_RESPONSE_BYTES))
        except urllib.error.HTTPError as exc:
            raise SaladError(f"{method} {url}: HTTP {exc.code} {exc.reason}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise SaladError(f"{method} {url}: {exc}") from None

    @staticmethod
    def _parse(model: type[M], data: bytes, what: str) -> M:
        try:
            return model.model_validate_json(data)
        except ValidationError as exc:
            raise SaladError(f"{what}: unexpected response: {exc.error_count()} error(s)") from None

    def list_groups(self) -> GroupList:
        data = self._call("GET", f"{self._project}/containers")
        return self._parse(GroupList, data, "container groups")

    def gpu_classes(self) -> GpuClassList:
        data = self._call("GET", f"{self._org}/gpu-classes")
        return self._parse(GpuClassList, data, "GPU classes")

    def get_group(self) -> ContainerGroup | None:
        """The container group, or None when it does not exist yet."""
        try:
            data = self._call("GET", self._group)
        except SaladError as exc:
            if exc.status == 404:
                return None
            raise
        return self._parse(ContainerGroup, data, "container group")

    def create_group(self, creation: GroupCreation) -> ContainerGroup:
        data = self._call("POST", f"{self._project}/containers", creation)
        return self._parse(ContainerGroup, data, "container group")

    def patch_group(self, patch: GroupPatch) -> ContainerGroup:
        data = self._call("PATCH", self._group, patch, "application/merge-patch+json")
        return self._parse(ContainerGroup, data, "container group")

    def list_instances(self) -> InstanceList:
        """The group's replicas as SaladCloud sees them (machine ids and states)."""
        data = self._call("GET", f"{self._group}/instances")
        return self._parse(InstanceList, data, "container group instances")

    def start(self) -> None:
        self._call("POST", f"{self._group}/start")

    def stop(self) -> None:
        self._call("POST", f"{self._group}/stop")


def error_text(exc: SaladError) -> str:
    """One line for a user: what failed and, for the common statuses, what to check."""
    hints = {
        401: "the API key was refused: check the secret named by `salad.api_key_secret`",
        403: "the API key may not use this organization or project",
        404: "no such organization or project: check `salad.organization` and `salad.project`",
    }
    hint = hints.get(exc.status)
    return f"{exc}; {hint}" if hint else str(exc)
