"""The job row's text with its spec's part reused is the text model_dump_json gives."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from relaymd.models import CommandSettings, Job, JobSpec, JobState, ObjectRef, OpenMMSettings
from relaymd.models.job import OperatorRequest
from relaymd.models.storage import CheckpointRef
from relaymd.state import job_json as module
from relaymd.state.job_json import job_json

BUNDLE = ObjectRef(key="jobs/x/input/bundle.tar.gz", sha256="0" * 64, size=1)
POINTER = CheckpointRef(
    epoch=2, seq=1, step=500, prefix="jobs/x/ckpt/2/1", manifest_sha256="a" * 64
)


def _spec(title: str, priority: int = 0) -> JobSpec:
    return JobSpec(title=title, engine=OpenMMSettings(total_steps=10_000), priority=priority)


@pytest.mark.parametrize(
    "job_id",
    ["j1", "job-0001", 'we"ird,"state":x', "back\\slash", "ünïcødé-😀", "tab\tnew\nline", ""],
)
def test_same_text_as_model_dump_json(job_id: str) -> None:
    job = Job(id=job_id, spec=_spec(f"title {job_id}"), bundle=BUNDLE)
    assert job_json(job) == job.model_dump_json()
    busy = job.model_copy(
        update={
            "state": JobState.RUNNING,
            "epoch": 2,
            "checkpoint": POINTER,
            "fallbacks": [POINTER],
            "ns_per_day": 123.25,
            "operator_request": OperatorRequest.CANCEL,
            "log_tail": ["a", "b \u2603"],
            "updated_at": datetime(2026, 12, 4, tzinfo=UTC),
        }
    )
    assert job_json(busy) == busy.model_dump_json()
    assert Job.model_validate_json(job_json(busy)) == busy


def test_a_spec_is_serialized_once_while_its_rows_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_spec_texts", {})
    spec = _spec("shared")
    calls = 0
    original = JobSpec.model_dump_json

    def counted(self: JobSpec, **kwargs: object) -> str:
        nonlocal calls
        calls += 1
        return original(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JobSpec, "model_dump_json", counted)
    job = Job(id="j1", spec=spec, bundle=BUNDLE)
    for speed in range(5):
        job = job.model_copy(update={"ns_per_day": float(speed)})
        assert job_json(job) == job.model_dump_json()
    assert calls == 1
    # Another spec object (even an equal one) is its own entry: identity, not equality.
    other = Job(id="j2", spec=_spec("shared"), bundle=BUNDLE)
    assert job_json(other) == other.model_dump_json()
    assert calls == 2


def test_the_memo_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_spec_texts", {})
    monkeypatch.setattr(module, "CAPACITY", 3)
    jobs = [Job(id=f"j{i}", spec=_spec(f"t{i}", i), bundle=BUNDLE) for i in range(7)]
    for job in jobs:
        assert job_json(job) == job.model_dump_json()
        assert len(module._spec_texts) <= 3


def test_a_stored_spec_cannot_change_in_place() -> None:
    spec = _spec("fixed")
    with pytest.raises(ValidationError):
        spec.title = "changed"  # type: ignore[misc]
    assert spec.model_copy(update={"priority": 5}).priority == 5
    # Nor can its parts: each would change the spec's kept text behind its back.
    with pytest.raises(ValidationError):
        spec.resources.gpus = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        spec.placement.allowed_clusters = ["a"]  # type: ignore[misc]
    engine = spec.engine
    assert isinstance(engine, OpenMMSettings)
    with pytest.raises(ValidationError):
        engine.total_steps = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        engine.integrator_settings.timestep_fs = 4.0  # type: ignore[misc]
    command = CommandSettings(command=["run.sh"], checkpoint_globs=["*.chk"])
    with pytest.raises(ValidationError):
        command.command = ["other.sh"]  # type: ignore[misc]


def test_a_pdb_input_still_leaves_no_xml_inputs() -> None:
    """The one validator that assigned into an engine's settings now sets them first."""
    engine = OpenMMSettings(
        pdb="in.pdb", forcefields=["amber14-all.xml"], system="s.xml", total_steps=10
    )
    assert (engine.system, engine.state, engine.integrator) == (None, None, None)
    assert {"system", "state", "integrator"} <= engine.model_fields_set
    xml = OpenMMSettings(total_steps=10)
    assert (xml.system, xml.state, xml.integrator) == ("system.xml", "state.xml", "integrator.xml")


def test_timestamp_texts_kept_are_the_texts_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta, timezone

    from relaymd.state import queries

    monkeypatch.setattr(queries, "_UTC_TEXTS", {})
    monkeypatch.setattr(queries, "_UTC_TEXTS_KEPT", 2)
    instant = datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)
    same_elsewhere = instant.astimezone(timezone(timedelta(hours=-5)))
    naive = datetime(2026, 12, 4, 13, 0)
    for value in (instant, same_elsewhere, naive, instant, naive, same_elsewhere):
        expected = value.replace(tzinfo=value.tzinfo or UTC).astimezone(UTC)
        assert queries.ts(value) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert len(queries._UTC_TEXTS) <= 2
    assert queries.ts(None) is None
