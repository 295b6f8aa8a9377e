import random

from relaymd.daemon.assign import assign
from relaymd.daemon.provision import ClusterMode, can_start_here, is_spare, plan_provisioning
from relaymd.ids import slot_allocation_id
from relaymd.models import Allocation, AllocationState, GpuInfo, Partition
from tests.daemon.daemon_factories import make_alloc, make_job, make_profile
from tests.support.slot_rows import slot_row

P = AllocationState.PENDING
R = AllocationState.RUNNING


def plan(profile, queued, allocs, profiles=None, usable=None, mode=ClusterMode.OPEN, racing=False):
    profiles = profiles or {profile.name: profile}
    return plan_provisioning(
        profile,
        queued=queued,
        allocations=allocs,
        profiles=profiles,
        usable_clusters=usable if usable is not None else set(profiles),
        mode=mode,
        queue_racing=racing,
    )


def test_submits_for_unmet_demand_within_max_pending() -> None:
    profile = make_profile(max_pending=2)
    jobs = [make_job(f"j{i}", created_s=i) for i in range(5)]
    out = plan(profile, jobs, [])
    assert len(out.submit) == 2 and out.cancel == []
    # Two pending already cover two jobs and fill max_pending: nothing more.
    allocs = [make_alloc("a1", state=P), make_alloc("a2", state=P)]
    assert plan(profile, jobs, allocs).submit == []


def test_idle_and_pending_supply_is_counted() -> None:
    profile = make_profile(max_pending=5, max_running=10)  # max_running not the limit
    jobs = [make_job("j1"), make_job("j2")]
    allocs = [make_alloc("a1", state=R), make_alloc("a2", state=P)]
    assert plan(profile, jobs, allocs).submit == []
    # A bound, stopping, or leaving allocation is not supply.
    allocs = [
        make_alloc("a1", state=R, job_id="jx"),
        make_alloc("a2", state=R, end_reason="handoff"),
        make_alloc("a3", state=R, stop_requested_at=make_alloc().submitted_at),
    ]
    assert len(plan(profile, jobs, allocs).submit) == 2


def test_max_running_blocks_new_submissions() -> None:
    profile = make_profile(max_running=1)
    out = plan(profile, [make_job()], [make_alloc("a1", state=R, job_id="jx")])
    assert out.submit == []


def test_cancels_pending_nobody_needs_but_not_idle_workers() -> None:
    profile = make_profile()
    allocs = [
        make_alloc("a1", state=P, submitted_s=1),
        make_alloc("a2", state=P, submitted_s=2),
        make_alloc("a3", state=R),
    ]
    out = plan(profile, [make_job("j1")], allocs)
    # The idle worker takes j1; both pending are surplus. Idle workers leave on their own.
    assert sorted(out.cancel) == ["a1", "a2"]
    out = plan(profile, [make_job("j1"), make_job("j2")], allocs)
    assert out.cancel == ["a2"]  # the oldest pending is kept


def test_eligibility_image_gpus_placement() -> None:
    profile = make_profile(gpus=1, native=False)
    assert plan(profile, [make_job(image="atom-openmm")], []).submit == []
    assert plan(profile, [make_job(gpus=2)], []).submit == []
    assert plan(profile, [make_job(allowed=["other"])], []).submit == []
    assert len(plan(profile, [make_job(gpus=1, allowed=["c1"])], []).submit) == 1


def test_partitions_fill_in_order_and_image_is_recorded() -> None:
    profile = make_profile(
        partitions=[
            Partition(name="small", walltime_minutes=5, gpus_per_allocation=1, max_pending=1),
            Partition(name="big", walltime_minutes=5, gpus_per_allocation=4, max_pending=3),
        ]
    )
    jobs = [make_job("j1", gpus=4), make_job("j2", gpus=1), make_job("j3", gpus=1)]
    out = plan(profile, jobs, [])
    # j2 takes the one small slot; j1 fits only big. j3 alone would fill a quarter of a
    # 4-GPU allocation (below min_fill, ADR 0026): it waits for the small partition.
    assert sorted((s.partition, s.image) for s in out.submit) == [
        ("big", "openmm"),
        ("small", "openmm"),
    ]


def test_disabled_cluster_submits_nothing() -> None:
    for mode in (ClusterMode.WATCH, ClusterMode.DISABLED):
        assert plan(make_profile(), [make_job()], [], mode=mode).submit == []


def test_without_racing_supply_elsewhere_counts_once() -> None:
    c1, c2 = make_profile("c1"), make_profile("c2")
    profiles = {"c1": c1, "c2": c2}
    pending_on_c2 = [make_alloc("a1", cluster="c2", state=P)]
    assert plan(c1, [make_job()], pending_on_c2, profiles).submit == []
    # ... unless c2 is unreachable: then demand moves to c1.
    assert len(plan(c1, [make_job()], pending_on_c2, profiles, usable={"c1"}).submit) == 1


def test_queue_racing_submits_on_every_cluster_and_cancels_surplus_once_met() -> None:
    c1, c2 = make_profile("c1"), make_profile("c2")
    profiles = {"c1": c1, "c2": c2}
    pending_on_c2 = [make_alloc("a1", cluster="c2", state=P)]
    out = plan(c1, [make_job()], pending_on_c2, profiles, racing=True)
    assert len(out.submit) == 1
    # The job got bound on c2: c1's pending allocation is surplus.
    allocs = [
        make_alloc("a1", cluster="c2", state=R, job_id="j1"),
        make_alloc("a2", cluster="c1", state=P),
    ]
    out = plan(c1, [], allocs, profiles, racing=True)
    assert out.cancel == ["a2"] and out.submit == []


def test_max_running_caps_pending_that_will_run() -> None:
    # 3 running + 1 pending against max_running=4: no room, whatever max_pending allows.
    profile = make_profile(max_pending=5, max_running=4)
    busy = [make_alloc(f"r{i}", state=R, job_id=f"x{i}") for i in range(3)]
    busy.append(make_alloc("p1", state=P, submitted_s=1))
    jobs = [make_job(f"j{i}", created_s=i) for i in range(5)]
    assert plan(profile, jobs, busy).submit == []
    # 2 running: room for one more pending, not max_pending - pending = 4.
    assert len(plan(profile, jobs, busy[1:]).submit) == 1
    # Over the cap already (max_running lowered): room floors at 0.
    assert plan(make_profile(max_running=1), jobs, busy).submit == []


def test_pending_allocation_counts_as_supply_for_a_vram_job() -> None:
    profile = make_profile(max_pending=2)
    job = make_job("j1", gpus=1, min_vram_gib=16)
    # Nothing measured yet: kept for the job, nothing else submitted (no cancel/submit loop).
    pending = make_alloc("a1", state=P, scheduler_id="100")
    out = plan(profile, [job], [pending])
    assert out.cancel == [] and out.submit == []
    # Running but no heartbeat yet: still unmeasured, still supply.
    starting = make_alloc("a1", state=R)
    assert plan(profile, [job], [starting]).submit == []
    # But binding needs the measurement.
    assert assign([starting], [job], profile) == []
    # Measured too small: not supply, so an allocation is submitted for the job.
    small = make_alloc("a1", state=R, last_seq=1, gpus=[GpuInfo(name="T4", memory_total_mib=8192)])
    assert len(plan(profile, [job], [small]).submit) == 1
    # A heartbeat with no GPUs is a measurement too (no usable GPU).
    none = make_alloc("a1", state=R, last_seq=1)
    assert len(plan(profile, [job], [none]).submit) == 1


def test_disabled_cluster_cancels_its_pending_spares_and_demand_moves() -> None:
    c1, c2 = make_profile("c1"), make_profile("c2")
    profiles = {"c1": c1, "c2": c2}
    allocs = [
        make_alloc("a1", cluster="c2", state=P),
        make_alloc("a2", cluster="c2", state=R, job_id="jx"),
    ]
    # c2's own plan: its pending allocation goes even though a job could use it; the
    # running one (bound) is left to finish.
    out = plan(c2, [make_job()], allocs, profiles, usable={"c1"}, mode=ClusterMode.DISABLED)
    assert out.cancel == ["a1"] and out.submit == []
    # c1 does not count c2's pending allocation as supply and submits for the job.
    out = plan(c1, [make_job()], allocs, profiles, usable={"c1"})
    assert len(out.submit) == 1


def _group(group_id: str, partition: str, state: AllocationState, bound: bool) -> list[Allocation]:
    """A 4-GPU group's slot rows; bound: the lead holds a job, the others lend it their GPUs."""
    lead = slot_allocation_id(group_id, 0)
    return [
        slot_row(
            group_id,
            i,
            cluster="c1",
            partition=partition,
            state=state,
            job_id=f"b-{group_id}" if bound and i == 0 else None,
            held_by=lead if bound and i else None,
        )
        for i in range(4)
    ]


def _partition(rng: random.Random, name: str, gpus: int, pending: int, running: int) -> Partition:
    """A partition with caps drawn up to `pending` and `running`."""
    return Partition(
        name=name,
        walltime_minutes=5,
        gpus_per_allocation=gpus,
        max_pending=rng.randint(0, pending),
        max_running=rng.randint(0, running),
    )


def test_can_start_here_counts_a_gpu_group_once_as_the_plan_does() -> None:
    """The prefilter of a cycle (load every active job, look for successor demand) never
    says "nothing can start" where the plan would submit: both count a group of GPU slots as
    the one scheduler job it is (a 4-GPU group running is 1 of max_running, not 4)."""
    big = Partition(
        name="big", walltime_minutes=5, gpus_per_allocation=4, max_pending=1, max_running=2
    )
    profile = make_profile(partitions=[big])
    running_group = _group("g1", "big", R, bound=True)
    jobs = [make_job(f"j{i}", gpus=4, created_s=i) for i in range(2)]
    assert len(plan(profile, jobs, running_group).submit) == 1  # one more group fits
    assert can_start_here(profile, running_group)


def test_can_start_here_is_true_wherever_the_plan_submits() -> None:
    """Random own rows (single allocations and 4-GPU groups, waiting or running, bound or
    spare) against random caps: where the plan submits for 4-GPU and 1-GPU jobs, or an own
    row is spare, `can_start_here` says so; where it says no, nothing is spare."""
    rng = random.Random(18)
    for case in range(400):
        parts = [_partition(rng, "one", 1, 3, 4), _partition(rng, "four", 4, 2, 3)]
        profile = make_profile(partitions=parts)
        rows = []
        for n in range(rng.randint(0, 4)):
            state = rng.choice([P, R, AllocationState.SUBMITTING])
            bound = rng.random() < 0.7
            if rng.random() < 0.5:
                job_id = f"b{n}" if bound else None
                rows.append(make_alloc(f"a{n}", partition="one", state=state, job_id=job_id))
            else:
                rows += _group(f"g{n}", "four", state, bound)
        jobs = [make_job(f"j{i}", gpus=rng.choice([1, 4]), created_s=-3600) for i in range(6)]
        submits = plan(profile, jobs, rows).submit
        spare = any(is_spare(a) for a in rows)
        if submits or spare:
            assert can_start_here(profile, rows), (case, submits, rows)
