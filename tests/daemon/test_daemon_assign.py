from relaymd.daemon.assign import assign
from relaymd.models import GpuInfo, Partition
from tests.daemon.daemon_factories import make_alloc, make_job, make_profile


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


def test_a_job_waits_for_an_idle_worker_on_a_cluster_it_prefers() -> None:
    from relaymd.daemon.assign import held_for_preferred

    profiles = {"c1": make_profile("c1"), "c2": make_profile("c2")}
    likes_c2 = make_job("j1", preferred=["c2"], gpus=1)
    likes_c2_too = make_job("j2", preferred=["c2"], gpus=1, created_s=1)
    indifferent = make_job("j3", gpus=1, created_s=2)
    idle_on_c2 = make_alloc("b1", cluster="c2", last_seq=5)
    # One idle c2 worker: held for the first job that prefers c2; the second binds here.
    held = held_for_preferred([likes_c2, likes_c2_too, indifferent], [idle_on_c2], profiles, "c1")
    assert held == {"j1"}
    # On c2 itself nothing is held; without an idle c2 worker nothing is held either.
    assert held_for_preferred([likes_c2], [idle_on_c2], profiles, "c2") == set()
    assert held_for_preferred([likes_c2], [], profiles, "c1") == set()
