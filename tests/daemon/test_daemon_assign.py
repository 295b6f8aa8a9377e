from daemon_factories import make_alloc, make_job, make_profile

from relaymd.daemon.assign import assign
from relaymd.models import GpuInfo, Partition


def gpu(name: str, gib: int) -> GpuInfo:
    return GpuInfo(name=name, memory_total_mib=gib * 1024)


def pairs(bindings):
    return {(b.job_id, b.allocation_id) for b in bindings}


def test_priority_then_age_decides_who_gets_the_only_allocation() -> None:
    profile = make_profile()
    jobs = [make_job("old", created_s=0), make_job("new", created_s=5), make_job("vip", priority=9)]
    assert pairs(assign([make_alloc("a1")], jobs, profile)) == {("vip", "a1")}
    jobs = jobs[:2]
    assert pairs(assign([make_alloc("a1")], jobs, profile)) == {("old", "a1")}


def test_measured_vram_gates_and_smallest_sufficient_gpu_is_used() -> None:
    profile = make_profile()
    small = make_alloc("small", gpus=[gpu("T4", 16)])
    big = make_alloc("big", gpus=[gpu("A100", 80)])
    assert pairs(assign([small, big], [make_job("j", min_vram_gib=40)], profile)) == {("j", "big")}
    assert pairs(assign([small], [make_job("j", min_vram_gib=40)], profile)) == set()
    assert pairs(assign([small, big], [make_job("j", min_vram_gib=8)], profile)) == {("j", "small")}


def test_preferred_gpus_ranking() -> None:
    profile = make_profile(preferred_gpus=["H100", "A100"])
    a100 = make_alloc("a", gpus=[gpu("NVIDIA A100-SXM4", 80)])
    h100 = make_alloc("h", gpus=[gpu("NVIDIA H100", 80)])
    assert pairs(assign([a100, h100], [make_job("j")], profile)) == {("j", "h")}


def test_gpu_count_fewest_wasted() -> None:
    profile = make_profile(
        partitions=[
            Partition(name="one", walltime_minutes=5, gpus_per_allocation=1),
            Partition(name="four", walltime_minutes=5, gpus_per_allocation=4),
        ]
    )
    one = make_alloc("one", partition="one")
    four = make_alloc("four", partition="four")
    assert pairs(assign([four, one], [make_job("j", gpus=1)], profile)) == {("j", "one")}
    assert pairs(assign([one], [make_job("j", gpus=2)], profile)) == set()


def test_image_and_placement_must_match() -> None:
    profile = make_profile()
    alloc = make_alloc("a1", image="atom-openmm")
    assert assign([alloc], [make_job(image="openmm")], profile) == []
    assert assign([make_alloc("a1")], [make_job(allowed=["c9"])], profile) == []


def test_each_allocation_takes_one_job() -> None:
    profile = make_profile()
    jobs = [make_job(f"j{i}", created_s=i) for i in range(3)]
    out = assign([make_alloc("a1"), make_alloc("a2")], jobs, profile)
    assert len({b.allocation_id for b in out}) == 2
    assert {b.job_id for b in out} == {"j0", "j1"}
