"""copy_with is model_copy(update=...) made cheaper: held to the same result."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, PrivateAttr

from relaymd.models.base import copy_with
from tests.daemon.daemon_factories import make_alloc, make_job

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _same(left: BaseModel, right: BaseModel) -> None:
    assert type(left) is type(right)
    assert left == right
    assert left.__dict__ == right.__dict__
    assert left.model_fields_set == right.model_fields_set
    assert left.__pydantic_extra__ == right.__pydantic_extra__
    assert left.__pydantic_private__ == right.__pydantic_private__
    assert left.model_dump_json() == right.model_dump_json()


def test_rows_copy_as_model_copy_does() -> None:
    job, alloc = make_job(), make_alloc(job_id="j1")
    job_updates: list[dict[str, object]] = [
        {},
        {"ns_per_day": 12.5, "total_steps": 900, "updated_at": NOW},
    ]
    for update in job_updates:
        _same(copy_with(job, update), job.model_copy(update=update))
    alloc_updates: list[dict[str, object]] = [{"last_seq": 7, "seq_changed_at": NOW}, {"gpus": []}]
    for update in alloc_updates:
        _same(copy_with(alloc, update), alloc.model_copy(update=update))


def test_the_copy_is_its_own() -> None:
    alloc = make_alloc()
    copied = copy_with(alloc, {"last_seq": 3})
    assert copied is not alloc and alloc.last_seq is None and copied.last_seq == 3
    copied.__dict__["last_seq"] = 4
    copied.model_fields_set.add("partition")
    assert alloc.last_seq is None and "partition" in copied.model_fields_set
    assert alloc.model_fields_set == make_alloc().model_fields_set


class _WithPrivate(BaseModel):
    value: int = 0
    _cache: dict[str, int] = PrivateAttr(default_factory=dict)


def test_private_attributes_are_copied_shallow() -> None:
    model = _WithPrivate(value=1)
    model._cache["x"] = 1
    copied = copy_with(model, {"value": 2})
    _same(copied, model.model_copy(update={"value": 2}))
    copied._cache = {"y": 2}  # the copy's own attribute, as after model_copy
    assert model._cache == {"x": 1}
