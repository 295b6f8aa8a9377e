"""The parts of SaladCloud's public API shapes the provider reads and writes (ADR 0025).

Field names follow SaladCloud's OpenAPI description (ContainerGroupCreationRequest,
ContainerGroupPatch, ContainerGroup). Responses are WireModels: fields we do not read are
ignored, so a newer API version still parses."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator

from relaymd.models.base import WireModel


class GroupStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEPLOYING = "deploying"


class Resources(WireModel):
    cpu: int
    memory: int  # megabytes
    gpu_classes: list[str] = Field(default_factory=list)

    # SaladCloud answers null for "no GPU" and "no command": the same as empty here.
    _no_gpu = field_validator("gpu_classes", mode="before")(lambda v: [] if v is None else v)


class Container(WireModel):
    image: str
    resources: Resources
    command: list[str] = Field(default_factory=list)
    environment_variables: dict[str, str] = Field(default_factory=dict)

    _no_command = field_validator("command", mode="before")(lambda v: [] if v is None else v)
    _no_env = field_validator("environment_variables", mode="before")(
        lambda v: {} if v is None else v
    )


class GroupState(WireModel):
    status: GroupStatus = GroupStatus.PENDING


class ContainerGroup(WireModel):
    name: str
    replicas: int = 0
    container: Container
    current_state: GroupState = Field(default_factory=GroupState)


class GroupCreation(WireModel):
    """POST /organizations/{o}/projects/{p}/containers."""

    name: str
    container: Container
    replicas: int
    restart_policy: str = "always"  # a replica whose worker exits is started again
    autostart_policy: bool = False


class GroupPatch(WireModel):
    """PATCH .../containers/{name} (application/merge-patch+json): absent means unchanged."""

    container: Container | None = None
    replicas: int | None = None


class GroupList(WireModel):
    """GET .../containers: answers 401 for a refused key, 404 for an unknown project."""

    items: list[ContainerGroup] = Field(default_factory=list)


class GpuClass(WireModel):
    id: str
    name: str = ""


class GpuClassList(WireModel):
    """GET /organizations/{o}/gpu-classes."""

    items: list[GpuClass] = Field(default_factory=list)


class Instance(WireModel):
    """One replica as SaladCloud reports it (ContainerGroupInstance). `state` is kept as text:
    allocating, downloading, creating, running, stopping (a newer state still parses)."""

    instance_id: str = ""
    machine_id: str
    state: str = ""


class InstanceList(WireModel):
    """GET .../containers/{name}/instances (ContainerGroupInstanceCollection)."""

    instances: list[Instance] = Field(default_factory=list)
