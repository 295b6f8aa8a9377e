"""The Salad client against the stand-in over real HTTP (ADR 0025): the key in the header,
the paths and shapes of the published API, clear errors that never carry the key."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from relaymd.models import StorageAccess
from relaymd.models.salad import SaladSettings
from relaymd.providers.salad.api_models import GroupCreation, GroupPatch, InstanceList
from relaymd.providers.salad.client import SaladClient, SaladError, error_text
from relaymd.providers.salad.spec import container
from tests.support.salad_standin import SaladStandin
from tests.support.waiting import poll_until

KEY = "salad-key-0123456789"


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[SaladStandin]:
    with SaladStandin(
        api_key=KEY, organization="lab", project="md", images={"ghcr.io/lab/worker:1"},
        root=tmp_path, extra_path=str(Path(sys.executable).parent),
    ) as s:  # fmt: skip
        yield s


def _settings(standin: SaladStandin, **kw: object) -> SaladSettings:
    base: dict[str, object] = dict(
        organization="lab", project="md", container_group="relay",
        image="ghcr.io/lab/worker:1", api_url=standin.url,
    )  # fmt: skip
    base.update(kw)
    return SaladSettings.model_validate(base)


def test_a_wrong_key_is_refused_with_a_hint_and_without_the_key(standin: SaladStandin) -> None:
    client = SaladClient(_settings(standin), SecretStr("wrong-key-xyz"))
    with pytest.raises(SaladError) as caught:
        client.list_groups()
    assert caught.value.status == 401
    text = error_text(caught.value)
    assert "api_key_secret" in text and "wrong-key-xyz" not in text


def test_an_unknown_project_is_a_404_naming_the_fields(standin: SaladStandin) -> None:
    client = SaladClient(_settings(standin, project="other"), SecretStr(KEY))
    with pytest.raises(SaladError) as caught:
        client.list_groups()
    assert caught.value.status == 404 and "salad.project" in error_text(caught.value)


def test_create_patch_start_stop_follow_the_published_paths(standin: SaladStandin) -> None:
    settings = _settings(standin)
    client = SaladClient(settings, SecretStr(KEY))
    assert client.list_groups().items == []
    assert client.get_group() is None
    wanted = container(settings, StorageAccess(url="file:///bucket/relay"))
    created = client.create_group(GroupCreation(name="relay", container=wanted, replicas=0))
    assert created.container == wanted and created.replicas == 0
    patched = client.patch_group(GroupPatch(replicas=2))
    assert patched.replicas == 2 and patched.container == wanted
    client.start()
    group = client.get_group()
    assert group is not None and group.current_state.status == "running"
    client.stop()
    assert [m for m, _ in standin.requests] == [
        "GET", "GET", "POST", "PATCH", "POST", "GET", "POST",
    ]  # fmt: skip
    paths = [p for _, p in standin.requests]
    assert paths[0] == "/organizations/lab/projects/md/containers"
    assert paths[2] == "/organizations/lab/projects/md/containers"
    assert paths[3] == "/organizations/lab/projects/md/containers/relay"
    assert paths[4].endswith("/containers/relay/start") and paths[6].endswith("/stop")


def test_an_image_the_registry_lacks_is_refused(standin: SaladStandin) -> None:
    settings = _settings(standin, image="ghcr.io/lab/missing:9")
    client = SaladClient(settings, SecretStr(KEY))
    wanted = container(settings, StorageAccess(url="file:///bucket/relay"))
    with pytest.raises(SaladError) as caught:
        client.create_group(GroupCreation(name="relay", container=wanted, replicas=1))
    assert caught.value.status == 400


@contextmanager
def _started_group(
    tmp_path: Path, replicas: int, **standin: Any
) -> Iterator[tuple[SaladStandin, SaladClient]]:
    """A started group of `replicas` idle replicas on a stand-in made with `standin`."""
    with SaladStandin(
        api_key=KEY, organization="lab", project="md", images={"ghcr.io/lab/worker:1"},
        root=tmp_path, extra_path=str(Path(sys.executable).parent), idle_replicas=True,
        **standin,
    ) as salad:  # fmt: skip
        settings = _settings(salad)
        client = SaladClient(settings, SecretStr(KEY))
        wanted = container(settings, StorageAccess(url="file:///bucket/relay"))
        client.create_group(GroupCreation(name="relay", container=wanted, replicas=replicas))
        client.start()
        yield salad, client


def test_the_standin_interrupts_replicas_at_random_and_restarts_them(tmp_path: Path) -> None:
    """Seeded random SIGKILLs; restart policy `always` brings each back on a new machine."""
    with _started_group(tmp_path, 2, interrupt_mean_s=0.5, seed=3) as (standin, _):
        group = standin.groups["relay"]
        deadline = time.monotonic() + 120
        while group.killed < 3 and time.monotonic() < deadline:
            time.sleep(0.2)  # waiting on the stand-in's own count, bounded
        with standin.lock:
            machines = {r.machine_id for r in group.replicas}
            assert group.killed >= 3 and group.started >= group.killed + 1
            assert len(machines) == len(group.replicas)


def test_instances_parse_as_saladcloud_lists_them(tmp_path: Path) -> None:
    """GET .../instances (ContainerGroupInstanceCollection): a replica is listed `creating`
    while its container has not started (the stand-in's start_delay_s) under an instance id of
    its own; a newer state or field still parses."""
    with _started_group(tmp_path, 1, start_delay_s=3600) as (_, client):
        listed = poll_until(lambda: client.list_instances().instances, 30)
        assert listed is not None and [i.state for i in listed] == ["creating"]
        assert listed[0].machine_id and listed[0].instance_id != listed[0].machine_id
    future = InstanceList.model_validate_json(
        '{"instances": [{"instance_id": "i-1", "machine_id": "m-1", "state": "hibernating",'
        ' "update_time": "2026-12-04T07:00:00Z", "version": 3, "ready": false, "new": 1}]}'
    )
    assert [(i.machine_id, i.state) for i in future.instances] == [("m-1", "hibernating")]
