"""GPU slots in provisioning and placement (ADR 0026): the packing rule, slots as supply, and
which slots of one group a job that needs k GPUs takes."""

from __future__ import annotations

from datetime import timedelta

from relaymd.daemon.eligibility import fits_allocation
from relaymd.daemon.provision import ClusterMode, plan_provisioning
from relaymd.daemon.slot_packing import fill_target, group_slots, pack_group
from relaymd.models import Allocation, AllocationState, GpuInfo, Partition
from tests.daemon.daemon_factories import T0, make_alloc, make_job, make_profile

P = AllocationState.PENDING
R = AllocationState.RUNNING


def four(**fields: object) -> Partition:
    return Partition(
        **{"name": "four", "walltime_minutes": 30, "gpus_per_allocation": 4, "max_pending": 3}
        | fields
    )


def one() -> Partition:
    return Partition(name="one", walltime_minutes=30, gpus_per_allocation=1, max_pending=3)


def group(gid: str, n: int = 4, state: AllocationState = R, **fields: object) -> list[Allocation]:
    """The n slot rows of group `gid`."""
    return [
        make_alloc(
            f"{gid}-g{i}",
            partition="four",
            state=state,
            group_id=gid,
            slot=i,
            slot_count=n,
            scheduler_id="100",
            **fields,
        )
        for i in range(n)
    ]


def plan(profile, jobs, allocs, now=T0):
    return plan_provisioning(
        profile,
        queued=jobs,
        allocations=allocs,
        profiles={profile.name: profile},
        usable_clusters={profile.name},
        mode=ClusterMode.OPEN,
        queue_racing=False,
        now=now,
    )


def test_fill_target_rounds_min_fill_up() -> None:
    assert fill_target(four()) == 3  # 0.75 x 4
    assert fill_target(four(min_fill=0.5)) == 2
    assert fill_target(four(min_fill=0.3)) == 2  # 1.2 rounds up
    assert fill_target(four(min_fill=1.0)) == 4


def test_a_four_gpu_allocation_waits_for_enough_gpus_of_demand() -> None:
    profile = make_profile(partitions=[four()])
    two = [make_job(f"j{i}", gpus=1, created_s=i) for i in range(2)]
    assert plan(profile, two, []).submit == []
    three = [*two, make_job("j3", gpus=1, created_s=3)]
    [intent] = plan(profile, three, []).submit
    assert intent.partition == "four" and "3 of 4 GPUs" in (intent.reason or "")
    # Nine one-GPU jobs: two full groups and a third with one job short of the rule.
    nine = [make_job(f"j{i}", gpus=1, created_s=i) for i in range(9)]
    assert len(plan(profile, nine, []).submit) == 2


def test_a_job_that_waited_fill_wait_s_gets_its_allocation() -> None:
    profile = make_profile(partitions=[four(fill_wait_s=600)])
    job = make_job("j1", gpus=1)
    assert plan(profile, [job], [], now=job.updated_at + timedelta(seconds=599)).submit == []
    [intent] = plan(profile, [job], [], now=job.updated_at + timedelta(seconds=600)).submit
    assert "waited" in (intent.reason or "")


def test_only_the_multi_gpu_partition_fits_a_two_gpu_job() -> None:
    profile = make_profile(partitions=[one(), four()])
    [intent] = plan(profile, [make_job("j1", gpus=2)], []).submit
    assert intent.partition == "four" and intent.reason == "only this partition fits"
    # Without a smaller partition at all a 2-GPU job still needs one that big; a one-GPU
    # job waits for the fill rule (the packing has a point only if jobs may wait).
    alone = make_profile(partitions=[four()])
    assert len(plan(alone, [make_job("j1", gpus=2)], []).submit) == 1
    assert plan(alone, [make_job("j1", gpus=1)], []).submit == []


def test_a_smaller_partition_is_preferred_while_the_rule_is_not_met() -> None:
    # The 4-GPU partition is listed first, yet two one-GPU jobs go to the one-GPU partition.
    profile = make_profile(partitions=[four(), one()])
    jobs = [make_job("j1", gpus=1), make_job("j2", gpus=1, created_s=1)]
    assert sorted(s.partition for s in plan(profile, jobs, []).submit) == ["one", "one"]
    # Three jobs meet the rule: one 4-GPU allocation takes all of them.
    jobs.append(make_job("j3", gpus=1, created_s=2))
    assert [s.partition for s in plan(profile, jobs, []).submit] == ["four"]


def test_idle_and_pending_slots_are_supply_one_by_one() -> None:
    profile = make_profile(partitions=[four()])
    jobs = [make_job(f"j{i}", gpus=1, created_s=i) for i in range(4)]
    # A pending group offers four slots: nothing more to submit, nothing to cancel.
    out = plan(profile, jobs, group("g1", state=P))
    assert out.submit == [] and out.cancel == []
    # Two of a running group's slots busy, two idle: they serve two of the jobs.
    rows = group("g1")
    rows[0] = rows[0].model_copy(update={"job_id": "x0"})
    rows[1] = rows[1].model_copy(update={"job_id": "x1"})
    assert plan(profile, jobs[:2], rows).submit == []
    # Caps count groups, not slot rows: a 4-slot pending group is one of max_pending=1.
    capped = make_profile(partitions=[four(max_pending=2)])
    many = [make_job(f"k{i}", gpus=1, created_s=i) for i in range(12)]
    assert len(plan(capped, many, group("g1", state=P)).submit) == 1


def test_a_pending_group_is_cancelled_whole_and_only_when_no_slot_is_needed() -> None:
    profile = make_profile(partitions=[four()])
    pending = group("g1", state=P)
    out = plan(profile, [], pending)
    assert sorted(out.cancel) == [a.id for a in pending]
    # One job keeps one slot: the group stays, whole.
    assert plan(profile, [make_job("j1", gpus=1)], pending).cancel == []


def test_a_k_gpu_job_needs_k_free_slots_of_one_group() -> None:
    profile = make_profile(partitions=[four()])
    # Two groups with one free slot each: no supply for a 2-GPU job, so one more group.
    rows = group("g1") + group("g2")
    rows = [
        r.model_copy(update={"job_id": f"x{i}"}) if r.slot != 3 else r for i, r in enumerate(rows)
    ]
    job = make_job("j1", gpus=2)
    assert len(plan(profile, [job], rows).submit) == 1
    # Two free slots in g2: that is the job's supply.
    rows[-2] = rows[-2].model_copy(update={"job_id": None})
    assert plan(profile, [job], rows).submit == []


def test_group_slots_picks_the_tightest_group_lead_first_and_checks_each_gpu() -> None:
    profile = make_profile(partitions=[four()])
    big = [GpuInfo(name="A100", memory_total_mib=80 * 1024)]
    small = [GpuInfo(name="T4", memory_total_mib=16 * 1024)]
    g1 = group("g1", gpus=big)  # four free slots
    g2 = [a for a in group("g2", gpus=big) if a.slot in (1, 3)]  # two free slots
    job = make_job("j1", gpus=2, min_vram_gib=40)

    def fits(a: Allocation) -> bool:
        return fits_allocation(job, a, profile, group_member=True)

    members = group_slots(job, g1 + g2, fits)
    assert members is not None and [a.id for a in members] == ["g2-g1", "g2-g3"]
    # One of g2's GPUs is too small: VRAM applies per GPU, so g1 is used instead.
    g2[1] = g2[1].model_copy(update={"gpus": small})
    members = group_slots(job, g1 + g2, fits)
    assert members is not None and [a.id for a in members] == ["g1-g0", "g1-g1"]
    # A slot alone never fits a job that needs two GPUs.
    assert not fits_allocation(job, g1[0], profile)


def test_pack_group_keeps_one_image_per_allocation() -> None:
    profile = make_profile(partitions=[four()])
    jobs = [
        make_job("j1", gpus=1),
        make_job("j2", gpus=1, image="other", created_s=1),
        make_job("j3", gpus=2, created_s=2),
    ]
    fill = pack_group(jobs, profile, four(), None)
    assert [j.id for j in fill.jobs] == ["j1", "j3"] and fill.gpus == 3


def test_held_slots_are_not_supply() -> None:
    profile = make_profile(partitions=[four(min_fill=0.25)])
    rows = group("g1")
    rows[0] = rows[0].model_copy(update={"job_id": "jbig"})
    rows[1:] = [r.model_copy(update={"held_by": rows[0].id}) for r in rows[1:]]
    # Every other slot is held for the lead's 4-GPU job: a queued job needs a new group.
    assert len(plan(profile, [make_job("j1", gpus=1)], rows).submit) == 1


def test_a_one_gpu_job_wastes_nothing_on_a_slot() -> None:
    from relaymd.daemon.assign import assign

    profile = make_profile(
        partitions=[four(), Partition(name="p1", walltime_minutes=30, gpus_per_allocation=2)]
    )
    slot = group("g1")[3]
    pair = make_alloc("a2", partition="p1", state=R, submitted_s=-10)
    # The idle slot (already paid with its group) beats an allocation with a spare GPU.
    [binding] = assign([pair, slot], [make_job("j1", gpus=1)], profile)
    assert binding.allocation_id == slot.id
