"""The Salad provisioner on a real SQLite store and the SaladCloud stand-in over HTTP
(ADR 0025): HPC first, only-Salad-fits, the budget, the container kept up to date. The
verdicts are the stand-in's record of the container group, not the provisioner's answer."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from relaymd.daemon import salad_provisioning
from relaymd.daemon.context import DaemonContext
from relaymd.daemon.salad_provisioning import SaladProvisioner
from relaymd.models import (
    AllocationState,
    DaemonSettings,
    JobState,
    StorageAccess,
    WorkerSettings,
    utcnow,
)
from relaymd.models.cluster import ClusterProfile
from relaymd.providers.salad.client import SaladClient
from relaymd.providers.salad.demand import day_start
from relaymd.state import AsyncStateStore
from relaymd.storage import open_store
from tests.daemon.daemon_factories import make_alloc, make_job
from tests.support.salad_standin import SaladStandin
from tests.support.waiting import poll_until

KEY = "salad-prov-key-1"
IMAGE = "ghcr.io/lab/relaymd-worker:2"


def _profiles(url: str, **salad: Any) -> dict[str, ClusterProfile]:
    hpc = ClusterProfile.model_validate({
        "name": "hpc", "transport": "local", "scheduler": "slurm", "scratch": "/tmp/none",
        "partitions": [{"name": "gpu", "walltime_minutes": 60}],
        "images": {"openmm": {"sif": "/images/openmm.sif"}},
    })  # fmt: skip
    settings = {"organization": "lab", "project": "md", "container_group": "relay",
                "image": IMAGE, "api_url": url, "max_replicas": 2, "wait_before_s": 600,
                **salad}  # fmt: skip
    cloud = ClusterProfile.model_validate({
        "name": "salad", "scheduler": "salad", "salad": settings,
        "partitions": [{"name": "any", "walltime_minutes": 600}],
        "images": {"openmm": {"uri": f"docker://{IMAGE}"}},
    })  # fmt: skip
    return {"hpc": hpc, "salad": cloud}


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[SaladStandin]:
    with SaladStandin(
        api_key=KEY, organization="lab", project="md", images={IMAGE, "ghcr.io/lab/old:1"},
        root=tmp_path, extra_path=str(Path(sys.executable).parent), idle_replicas=True,
    ) as s:  # fmt: skip
        yield s


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStateStore]:
    store = await AsyncStateStore.open(tmp_path / "state.sqlite")
    yield store
    await store.close()


def _provisioner(
    store: AsyncStateStore, tmp_path: Path, standin: SaladStandin, **salad: Any
) -> SaladProvisioner:
    access = StorageAccess(url=(tmp_path / "bucket").as_uri())
    profiles = _profiles(standin.url, **salad)
    ctx = DaemonContext(
        store=store, object_store=open_store(access), access=access, profiles=profiles,
        settings=DaemonSettings(), worker=WorkerSettings(),
    )  # fmt: skip
    return SaladProvisioner(ctx, profiles["salad"], SecretStr(KEY))


async def _queue(store: AsyncStateStore, job_id: str, waited_s: float) -> None:
    await store.insert_job(make_job(job_id, updated_at=utcnow() - timedelta(seconds=waited_s)))


def _group(standin: SaladStandin) -> dict[str, Any]:
    return standin.groups["relay"].body


async def test_hpc_first_then_salad_after_the_wait(
    store: AsyncStateStore, tmp_path: Path, standin: SaladStandin
) -> None:
    prov = _provisioner(store, tmp_path, standin)
    await _queue(store, "fresh", 60)
    await prov.provision()
    group = _group(standin)
    assert group["replicas"] == 0 and group["current_state"]["status"] == "stopped"
    env = group["container"]["environment_variables"]
    assert env["RELAYMD_MAILBOX_ROOT"] == f"{(tmp_path / 'bucket').as_uri()}/mailbox"
    await _queue(store, "old", 700)
    await prov.provision()
    group = _group(standin)
    assert group["replicas"] == 1 and group["current_state"]["status"] == "running"


async def test_a_job_no_hpc_cluster_can_run_goes_to_salad_at_once(
    store: AsyncStateStore, tmp_path: Path, standin: SaladStandin
) -> None:
    prov = _provisioner(store, tmp_path, standin)
    prov.ctx.enabled["hpc"] = False  # the operator switched HPC off
    await _queue(store, "fresh", 1)
    await prov.provision()
    assert _group(standin)["replicas"] == 1


async def test_the_cap_and_the_day_budget_bound_the_replicas(
    store: AsyncStateStore, tmp_path: Path, standin: SaladStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The budget is per UTC day. On the daemon's clock held at noon, two hours spent fit in
    # today whenever the test runs (before 02:01 UTC a real clock's last two hours began
    # yesterday, and only their part after midnight counts).
    now = day_start(utcnow()) + timedelta(hours=12)
    monkeypatch.setattr(salad_provisioning, "utcnow", lambda: now)
    prov = _provisioner(store, tmp_path, standin, budget_replica_hours_per_day=2)
    for i in range(4):
        await store.insert_job(make_job(f"j{i}", updated_at=now - timedelta(seconds=9999)))
    await prov.provision()
    assert _group(standin)["replicas"] == 2  # max_replicas
    spent = make_alloc(
        "salad-m1-1", cluster="salad", partition="any", state=AllocationState.ENDED,
        started_at=now - timedelta(hours=2, minutes=1), ended_at=now - timedelta(minutes=1),
    )  # fmt: skip
    await store.insert_allocation(spent)
    prov.settings = prov.settings.model_copy(update={"max_replicas": 4})
    await prov.provision()
    assert _group(standin)["replicas"] == 2  # budget spent: not raised to 4


async def test_an_outdated_container_is_patched_and_idle_scales_to_zero(
    store: AsyncStateStore, tmp_path: Path, standin: SaladStandin
) -> None:
    old = _provisioner(store, tmp_path, standin)
    old.settings = old.settings.model_copy(update={"image": "ghcr.io/lab/old:1"})
    await _queue(store, "j", 9999)
    await old.provision()
    assert _group(standin)["container"]["image"] == "ghcr.io/lab/old:1"
    new = _provisioner(store, tmp_path, standin)
    await new.provision()
    group = _group(standin)
    assert group["container"]["image"] == IMAGE and group["version"] == 2
    assert group["replicas"] == 1
    job = await store.get_job("j")
    assert job is not None
    await store.update_job(job.model_copy(update={"state": JobState.COMPLETED}))
    await new.provision()
    group = _group(standin)
    assert group["replicas"] == 0 and group["current_state"]["status"] == "stopped"


async def test_a_refused_key_is_one_warning_event_and_no_crash(
    store: AsyncStateStore, tmp_path: Path, standin: SaladStandin
) -> None:
    prov = _provisioner(store, tmp_path, standin)
    prov.client = SaladClient(prov.settings, SecretStr("revoked-key-4"))
    await _queue(store, "j", 9999)
    assert await prov.provision() is None
    assert await prov.provision() is None
    events = [e for e in await store.list_events(limit=50) if e.kind == "salad_api_failed"]
    assert len(events) == 1 and "401" in events[0].message
    assert "revoked-key-4" not in events[0].message
    assert "relay" not in standin.groups  # nothing was created with a refused key


async def test_the_instance_list_names_each_replica_machine_until_it_vanishes(
    store: AsyncStateStore, tmp_path: Path, standin: SaladStandin
) -> None:
    """machines() reads the stand-in's GET .../instances: the machine ids its replicas were
    started with (SALAD_MACHINE_ID in their environment), while creating, running or stopping;
    a killed replica drops out of it once the stand-in has replaced it."""
    provisioner = _provisioner(store, tmp_path, standin, max_replicas=2)
    assert await provisioner.machines() is None  # no group yet: no evidence
    await _queue(store, "j1", waited_s=3600)
    await _queue(store, "j2", waited_s=3600)
    await provisioner.provision()
    listed = poll_until(lambda: _running(provisioner), 30)
    assert listed is not None
    assert _machine_envs(standin) == listed
    killed = standin.kill_one("relay")
    assert killed is not None and killed in listed
    poll_until(lambda: _running(provisioner, without=killed), 30)
    after = await provisioner.machines()
    assert after is not None and killed not in after and len(after & listed) == 1


def _running(provisioner: SaladProvisioner, without: str = "") -> frozenset[str] | None:
    listing = provisioner.client.list_instances().instances
    machines = frozenset(i.machine_id for i in listing if i.state == "running")
    return machines if len(machines) == 2 and without not in machines else None


def _machine_envs(standin: SaladStandin) -> frozenset[str]:
    """SALAD_MACHINE_ID as each replica process sees it (read from /proc, not the stand-in)."""
    found = set()
    for replica in standin.groups["relay"].replicas:
        assert replica.proc is not None
        environ = Path(f"/proc/{replica.proc.pid}/environ").read_bytes().split(b"\0")
        found |= {
            v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"SALAD_MACHINE_ID=")
        }
    return frozenset(found)
