"""Shared models: round trips, strict user data, tolerant wire data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from relaymd.mailbox.models import (
    Assignment,
    Control,
    ControlAction,
    EventKind,
    Heartbeat,
    WorkerEvent,
    WorkerState,
)
from relaymd.models import (
    Allocation,
    CheckpointManifest,
    CheckpointRef,
    ClusterProfile,
    CommandSettings,
    Config,
    GpuInfo,
    Job,
    JobSpec,
    ManifestFile,
    ObjectRef,
    OpenMMSettings,
    Segment,
    StorageAccess,
)

SHA = "a" * 64
REF = CheckpointRef(
    epoch=2, seq=3, step=400, prefix="jobs/j1/checkpoints/2-3/", manifest_sha256=SHA
)
BUNDLE = ObjectRef(key="jobs/j1/input/bundle.tar.gz", sha256=SHA, size=10)
SPEC = JobSpec(title="t", engine=OpenMMSettings(total_steps=1000))
PROFILE = ClusterProfile.model_validate(
    {
        "name": "clusterA",
        "ssh": {"host": "login.a"},
        "scratch": "/scratch/u/relaymd",
        "partitions": [{"name": "gpu", "walltime_minutes": 240}],
        "images": {"openmm": {"sif": "/shared/relaymd-worker.sif"}},
    }
)

SAMPLES: list[BaseModel] = [
    SPEC,
    JobSpec(
        title="atom",
        image="atom-openmm",
        engine=CommandSettings(
            command="python abfe.py cfg.cntl", preset="atom", target_samples=2000
        ),
    ),
    Job(id="j1", spec=SPEC, bundle=BUNDLE, checkpoint=REF, epoch=2),
    Allocation(id="a1", cluster="clusterA", partition="gpu", image="openmm", walltime_s=14400),
    Segment(job_id="j1", epoch=2, allocation_id="a1", cluster="clusterA"),
    Assignment(
        allocation_id="a1", job_id="j1", epoch=3, engine=SPEC.engine, bundle=BUNDLE, resume=REF
    ),
    Control(action=ControlAction.STOP, job_id="j1", epoch=3, reason="operator cancel"),
    Heartbeat(
        allocation_id="a1",
        seq=7,
        state=WorkerState.RUNNING,
        job_id="j1",
        epoch=3,
        gpus=[GpuInfo(name="NVIDIA H100", memory_total_mib=81559)],
        deadline=datetime(2026, 1, 1, tzinfo=UTC),
    ),
    WorkerEvent(
        kind=EventKind.CHECKPOINT, allocation_id="a1", job_id="j1", epoch=3, checkpoint=REF
    ),
    CheckpointManifest(
        job_id="j1",
        epoch=3,
        seq=1,
        step=500,
        engine="openmm",
        files=[ManifestFile(path="checkpoint.chk", sha256=SHA, size=5)],
    ),
    PROFILE,
]


@pytest.mark.parametrize("model", SAMPLES, ids=lambda m: type(m).__name__)
def test_json_round_trip(model: BaseModel) -> None:
    assert type(model).model_validate_json(model.model_dump_json()) == model


def test_user_data_rejects_unknown_fields_and_names_them() -> None:
    with pytest.raises(ValidationError) as err:
        JobSpec.model_validate(
            {"title": "t", "engine": {"kind": "openmm", "total_steps": 5, "totl_steps": 5}}
        )
    assert "totl_steps" in str(err.value)


def test_wire_data_from_a_newer_worker_is_read_tolerantly() -> None:
    data = Heartbeat(allocation_id="a1", seq=1, state=WorkerState.IDLE).model_dump(mode="json")
    data["field_from_the_future"] = {"x": 1}
    assert Heartbeat.model_validate(data).seq == 1


def test_command_line_string_is_split_like_a_shell() -> None:
    settings = CommandSettings(command="python 'my script.py' --n 3", checkpoint_globs=["*.chk"])
    assert settings.command == ["python", "my script.py", "--n", "3"]


def test_openmm_inputs_must_be_complete() -> None:
    with pytest.raises(ValidationError, match="forcefields"):
        OpenMMSettings(total_steps=10, pdb="input.pdb")
    pdb = OpenMMSettings(total_steps=10, pdb="input.pdb", forcefields=["amber14-all.xml"])
    assert pdb.system is None


def test_ssh_cluster_needs_ssh_section_and_images() -> None:
    with pytest.raises(ValidationError, match="ssh"):
        ClusterProfile.model_validate(
            {"name": "c", "scratch": "/s", "partitions": [{"name": "p", "walltime_minutes": 1}]}
        )


def test_storage_access_never_prints_its_secrets() -> None:
    access = StorageAccess(url="s3://b/p", access_key_id="AKID1234", secret_access_key="SECRET99")
    assert "SECRET99" not in repr(access) and "SECRET99" not in str(access)
    assert access.secret_values() == ["AKID1234", "SECRET99"]
    # The credentials file must carry the real values.
    reread = StorageAccess.model_validate_json(access.credentials_json())
    assert reread.secret_values() == ["AKID1234", "SECRET99"]
    assert "SECRET99" not in access.model_dump_json()


def test_config_accepts_profile_names_and_inline_profiles() -> None:
    config = Config.model_validate(
        {"storage": {"url": "s3://bucket/relaymd"}, "clusters": ["clusterB", PROFILE.model_dump()]}
    )
    assert config.clusters[0] == "clusterB"
    assert isinstance(config.clusters[1], ClusterProfile)


def test_a_command_job_that_could_never_resume_or_complete_is_refused() -> None:
    with pytest.raises(ValidationError, match="checkpoint_globs"):
        CommandSettings(command="python run.py")
    with pytest.raises(ValidationError, match="target_samples"):
        CommandSettings(command="python rbfe.py", preset="atom")
    assert CommandSettings(command="python rbfe.py", preset="atom", target_samples=10).preset
