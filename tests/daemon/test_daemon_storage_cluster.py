"""A storage cluster's adoption rules and its scheduler view, on a real SQLite store and a
real file:// bucket (the end-to-end run is test_daemon_storage_e2e.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from relaymd.daemon.context import DaemonContext
from relaymd.daemon.storage_cluster import StorageClusterCarrier
from relaymd.mailbox.carrier import ReadRequest
from relaymd.mailbox.layout import storage_mailbox_key
from relaymd.mailbox.models import Heartbeat, WorkerState
from relaymd.mailbox.reading import HeartbeatMemo
from relaymd.models import DaemonSettings, StorageAccess, WorkerSettings
from relaymd.models.cluster import ClusterProfile
from relaymd.scheduler.base import EndState, SchedulerPhase
from relaymd.state import AsyncStateStore
from relaymd.storage import open_store

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _profile() -> ClusterProfile:
    return ClusterProfile.model_validate(
        {
            "name": "lab",
            "scheduler": "storage",
            "partitions": [{"name": "ws", "walltime_minutes": 120, "gpus_per_allocation": 1}],
            "native_worker": ["relaymd-worker"],
        }
    )


@pytest.fixture
async def carrier(tmp_path: Path) -> AsyncIterator[StorageClusterCarrier]:
    store = await AsyncStateStore.open(tmp_path / "state.sqlite")
    access = StorageAccess(url=(tmp_path / "bucket").as_uri())
    profile = _profile()
    ctx = DaemonContext(
        store=store,
        object_store=open_store(access),
        access=access,
        profiles={"lab": profile},
        settings=DaemonSettings(stale_after_s=60, stop_grace_s=30),
        worker=WorkerSettings(),
    )
    yield StorageClusterCarrier(ctx, profile, HeartbeatMemo())
    await store.close()


def _beat(carrier: StorageClusterCarrier, alloc_id: str, seq: int, **fields: object) -> None:
    beat = Heartbeat(allocation_id=alloc_id, seq=seq, state=WorkerState.IDLE, **fields)
    carrier.ctx.object_store.put_bytes(
        storage_mailbox_key(alloc_id, "heartbeat.json"), beat.model_dump_json().encode()
    )


async def test_only_a_new_idle_worker_naming_itself_is_adopted_and_only_once(
    carrier: StorageClusterCarrier,
) -> None:
    bucket, store = carrier.ctx.object_store, carrier.ctx.store
    deadline = datetime.now(UTC) + timedelta(hours=3)
    _beat(carrier, "ws1", 0, deadline=deadline, hostname="lab-pc")
    _beat(carrier, "busy", 0, job_id="j9", epoch=3)  # claims a job nobody gave it
    _beat(carrier, "liar", 0)
    bucket.put_bytes("mailbox/liar/heartbeat.json", b'{"allocation_id": "ws1", "seq": 1, ')
    _beat(carrier, "bad name!", 0)  # well-formed, but not a name the daemon may use
    await carrier.read([])
    adopted = await store.get_allocation("ws1")
    assert adopted is not None and adopted.cluster == "lab" and adopted.partition == "ws"
    assert 2.9 * 3600 < adopted.walltime_s <= 3 * 3600  # from the worker's deadline
    assert bucket.exists("mailbox/ws1/credentials")
    for other in ("busy", "liar", "bad name!"):
        assert await store.get_allocation(other) is None
    assert [a.id for a in await store.list_allocations()] == ["ws1"]
    await carrier.read([])  # seen again: never a second row
    assert len(await store.list_allocations()) == 1


async def test_the_view_runs_while_the_heartbeat_changes_and_ends_when_it_stops(
    carrier: StorageClusterCarrier,
) -> None:
    asked = [ReadRequest(allocation_id="ws1")]
    with freeze_time(T0) as clock:
        _beat(carrier, "ws1", 1)
        first = await carrier.read(asked)
        assert first.scheduler_jobs["ws1"].phase is SchedulerPhase.RUNNING
        clock.tick(80)
        _beat(carrier, "ws1", 2)  # changed: the clock starts again
        assert (await carrier.read(asked)).scheduler_jobs["ws1"].phase is SchedulerPhase.RUNNING
        clock.tick(89)
        assert (await carrier.read(asked)).scheduler_jobs["ws1"].phase is SchedulerPhase.RUNNING
        clock.tick(2)  # unchanged for more than stale_after_s + stop_grace_s
        frozen = (await carrier.read(asked)).scheduler_jobs["ws1"]
        assert frozen.phase is SchedulerPhase.ENDED and frozen.end_state is EndState.NODE_FAIL
    carrier.ctx.object_store.put_bytes(
        storage_mailbox_key("ws2", "heartbeat.json"),
        Heartbeat(allocation_id="ws2", seq=9, state=WorkerState.EXITING).model_dump_json().encode(),
    )
    asked = [ReadRequest(allocation_id="ws2"), ReadRequest(allocation_id="gone")]
    views = (await carrier.read(asked)).scheduler_jobs
    assert views["ws2"].end_state is EndState.COMPLETED
    assert views["gone"].phase is SchedulerPhase.ENDED


async def test_an_unreachable_bucket_is_a_failed_poll(tmp_path: Path) -> None:
    import socket

    from pydantic import SecretStr

    from relaymd.daemon.poll_outcome import SnapshotError, poll_failures

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    access = StorageAccess(
        url="s3://bucket/prefix",
        endpoint_url=f"http://127.0.0.1:{port}",
        region="us-east-1",
        access_key_id=SecretStr("AKIDNOBODY"),
        secret_access_key=SecretStr("nobody-secret"),
        max_attempts=1,
    )
    store = await AsyncStateStore.open(tmp_path / "state.sqlite")
    ctx = DaemonContext(
        store=store,
        object_store=open_store(access),
        access=access,
        profiles={"lab": _profile()},
        settings=DaemonSettings(),
        worker=WorkerSettings(),
    )
    carrier = StorageClusterCarrier(ctx, _profile(), HeartbeatMemo())
    with pytest.raises(SnapshotError, match="lab: cannot read the mailboxes") as raised:
        await carrier.read([ReadRequest(allocation_id="ws1")])
    assert isinstance(raised.value, poll_failures())
    await store.close()


async def test_a_machine_the_provider_no_longer_lists_ends_at_once_and_a_listed_one_never_lives_on(
    carrier: StorageClusterCarrier,
) -> None:
    """The provider's instance list (ADR 0025) can end an allocation before stale_after_s,
    never keep one alive: a frozen heartbeat on a listed machine still ends by the clock."""
    listing: list[frozenset[str] | None] = [frozenset({"m-1", "m-2"})]

    async def machines() -> frozenset[str] | None:
        return listing[0]

    carrier.machines = machines
    asked = [ReadRequest(allocation_id=a) for a in ("ws1", "ws2", "ws3")]
    with freeze_time(T0) as clock:
        _beat(carrier, "ws1", 1, machine_id="m-1")
        _beat(carrier, "ws2", 1, machine_id="m-2")
        _beat(carrier, "ws3", 1)  # a worker started by hand names no machine
        views = (await carrier.read(asked)).scheduler_jobs
        assert {v.phase for v in views.values()} == {SchedulerPhase.RUNNING}
        listing[0] = frozenset({"m-1"})  # m-2 vanished; its heartbeat is seconds old
        clock.tick(1)
        views = (await carrier.read(asked)).scheduler_jobs
        assert views["ws2"].phase is SchedulerPhase.ENDED
        assert views["ws2"].end_state is EndState.NODE_FAIL  # resumable: no retry spent
        assert views["ws1"].phase is views["ws3"].phase is SchedulerPhase.RUNNING
        listing[0] = None  # the API failed: no evidence, the heartbeat alone decides
        _beat(carrier, "ws2", 2, machine_id="m-2")
        assert (await carrier.read(asked)).scheduler_jobs["ws2"].phase is SchedulerPhase.RUNNING
        listing[0] = frozenset({"m-1", "m-2"})
        clock.tick(91)  # m-1 still listed, but its heartbeat froze past stale + grace
        views = (await carrier.read(asked)).scheduler_jobs
        assert views["ws1"].phase is SchedulerPhase.ENDED
        assert views["ws1"].end_state is EndState.NODE_FAIL
