"""The operator's on/off switch as the cluster runners see it through the store."""

from __future__ import annotations

from pathlib import Path

from relaymd.models import Allocation, AllocationState, ClusterProfile
from relaymd.models.state import ClusterStatus
from tests.daemon.daemon_factories import make_job
from tests.support.fake_cluster import local_profile, make_fake_runners


def profile(name: str, scratch: Path) -> ClusterProfile:
    return local_profile(name, scratch, walltime_minutes=5)


async def test_disabled_cluster_pending_is_cancelled_and_demand_moves(tmp_path: Path) -> None:
    profiles = {name: profile(name, tmp_path / name) for name in ("c1", "c2")}
    fake = await make_fake_runners(tmp_path, profiles)
    store, runners = fake.store, fake.runners
    try:
        # c2 holds a pending allocation for the queued job, then the operator disables c2.
        await store.insert_allocation(
            Allocation(
                id="a0000000000000001",
                cluster="c2",
                partition="p1",
                image="openmm",
                state=AllocationState.PENDING,
                scheduler_id="500",
                walltime_s=300,
            )
        )
        (tmp_path / "c2" / "queue").write_text("a0000000000000001 500 pending\n")
        await store.insert_job(make_job("j1"))
        await store.upsert_cluster_status(ClusterStatus(name="c2", enabled=False))

        report = await runners["c1"].cycle()
        assert report.ok, report.error
        on_c1 = await store.list_allocations(cluster="c1")
        assert len(on_c1) == 1  # demand no longer parked on c2's pending allocation

        report = await runners["c2"].cycle()
        assert report.ok, report.error
        assert (tmp_path / "c2" / "queue").read_text().strip() == ""  # scancelled
        alloc = await store.get_allocation("a0000000000000001")
        assert alloc is not None and alloc.end_reason == "cluster disabled"
        # Gone from the queue: the next cycle ends it, and c2 submits nothing new.
        report = await runners["c2"].cycle()
        assert report.ok, report.error
        c2_allocs = await store.list_allocations(cluster="c2")
        assert [a.state for a in c2_allocs] == [AllocationState.ENDED]
    finally:
        await store.close()
