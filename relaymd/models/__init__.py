"""Pydantic models for all data that crosses a function, file or process boundary.

Imported by both the operator and the worker: keep it free of operator-only dependencies.
"""

from relaymd.models.allocation import Allocation, AllocationState, GpuInfo
from relaymd.models.base import UserModel, WireModel, utcnow
from relaymd.models.cluster import (
    ClusterProfile,
    ImageLocation,
    Partition,
    PollSettings,
    SSHSettings,
)
from relaymd.models.config import (
    Config,
    DaemonSettings,
    InfisicalSettings,
    SecretsConfig,
    StorageConfig,
    WorkerSettings,
)
from relaymd.models.engines import (
    CommandSettings,
    EngineSettings,
    IntegratorSettings,
    OpenMMSettings,
)
from relaymd.models.job import (
    Job,
    JobSpec,
    JobState,
    OperatorRequest,
    Placement,
    Resources,
    Segment,
    SegmentOutcome,
)
from relaymd.models.state import (
    AllocationCount,
    AuditEvent,
    ClusterReachability,
    ClusterStatus,
    DaemonStatus,
    StatusSummary,
)
from relaymd.models.storage import (
    CheckpointManifest,
    CheckpointRef,
    HandoffMarker,
    ManifestFile,
    ObjectRef,
    OutputsManifest,
    StorageAccess,
)
from relaymd.models.usage import GpuUsage

__all__ = [
    "Allocation",
    "AllocationCount",
    "AllocationState",
    "AuditEvent",
    "CheckpointManifest",
    "CheckpointRef",
    "ClusterProfile",
    "ClusterReachability",
    "ClusterStatus",
    "CommandSettings",
    "Config",
    "DaemonSettings",
    "DaemonStatus",
    "EngineSettings",
    "GpuInfo",
    "GpuUsage",
    "HandoffMarker",
    "ImageLocation",
    "InfisicalSettings",
    "IntegratorSettings",
    "Job",
    "JobSpec",
    "JobState",
    "ManifestFile",
    "ObjectRef",
    "OpenMMSettings",
    "OperatorRequest",
    "OutputsManifest",
    "Partition",
    "Placement",
    "PollSettings",
    "Resources",
    "SSHSettings",
    "SecretsConfig",
    "Segment",
    "SegmentOutcome",
    "StatusSummary",
    "StorageAccess",
    "StorageConfig",
    "UserModel",
    "WireModel",
    "WorkerSettings",
    "utcnow",
]
