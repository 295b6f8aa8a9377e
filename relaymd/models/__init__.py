"""Pydantic models for all data that crosses a function, file or process boundary.

Imported by both the operator and the worker: keep it free of operator-only dependencies.
"""

from relaymd.models.allocation import Allocation, AllocationState
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
from relaymd.models.mailbox import (
    ASSIGNMENT_FILE,
    CONTROL_FILE,
    CREDENTIALS_FILE,
    EVENTS_FILE,
    HEARTBEAT_FILE,
    WORKER_LOG_FILE,
    Assignment,
    Control,
    ControlAction,
    EventKind,
    GpuInfo,
    Heartbeat,
    WorkerEvent,
    WorkerState,
)
from relaymd.models.storage import (
    CheckpointManifest,
    CheckpointRef,
    ManifestFile,
    ObjectRef,
    StorageAccess,
)

__all__ = [
    "ASSIGNMENT_FILE",
    "CONTROL_FILE",
    "CREDENTIALS_FILE",
    "EVENTS_FILE",
    "HEARTBEAT_FILE",
    "WORKER_LOG_FILE",
    "Allocation",
    "AllocationState",
    "Assignment",
    "CheckpointManifest",
    "CheckpointRef",
    "ClusterProfile",
    "CommandSettings",
    "Config",
    "Control",
    "ControlAction",
    "DaemonSettings",
    "EngineSettings",
    "EventKind",
    "GpuInfo",
    "Heartbeat",
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
    "Partition",
    "Placement",
    "PollSettings",
    "Resources",
    "SSHSettings",
    "SecretsConfig",
    "Segment",
    "SegmentOutcome",
    "StorageAccess",
    "StorageConfig",
    "UserModel",
    "WireModel",
    "WorkerEvent",
    "WorkerSettings",
    "WorkerState",
    "utcnow",
]
