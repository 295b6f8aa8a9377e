"""GPU slot groups at the scheduler (ADR 0026): the group id is the SLURM job's name, slot ids
pass every id check, and the job script lists every slot's folder."""

from __future__ import annotations

import pytest

from relaymd.ids import group_of, is_allocation_id, slot_allocation_id
from relaymd.mailbox.shell import check_alphanumeric
from relaymd.models import Allocation, ClusterProfile
from relaymd.scheduler import SlurmScheduler, UnsafeValue
from relaymd.scheduler.shell import allocation_id
from tests.support.slot_rows import slot_row


def profile() -> ClusterProfile:
    return ClusterProfile.model_validate(
        {
            "name": "c1",
            "ssh": {"host": "login.a"},
            "scratch": "$SCRATCH/relaymd",
            "partitions": [{"name": "quad", "walltime_minutes": 60, "gpus_per_allocation": 4}],
            "native_worker": ["relaymd-worker"],
        }
    )


def slot(i: int) -> Allocation:
    return slot_row("a1b2", i, cluster="c1", partition="quad")


def test_slot_ids_pass_the_checks_and_nothing_else_new_does() -> None:
    assert slot_allocation_id("a1b2", 3) == "a1b2-g3"
    assert group_of("a1b2-g3") == "a1b2" and group_of("a1b2") == "a1b2"
    for good in ("a1b2", "a1b2-g0", "a1b2-g12"):
        assert is_allocation_id(good)
        assert allocation_id(good) == good
        check_alphanumeric(good)
    for bad in ("a1b2-", "a1b2-gx", "-g1", "a1b2-g1-g2", "a1b2;g1", "a1b2 -g1", ""):
        assert not is_allocation_id(bad)
        with pytest.raises(UnsafeValue):
            allocation_id(bad)
        with pytest.raises(ValueError):
            check_alphanumeric(bad)


def test_the_group_is_one_slurm_job_named_by_the_group_id_with_every_slot_folder() -> None:
    scheduler = SlurmScheduler(profile())
    context = scheduler.script_context(slot(0), profile(), ["--alloc-dir", "x"])
    assert context.job_name == "relaymd-a1b2"
    assert context.gres == "gpu:4"
    assert context.slot_dirs == [f"$SCRATCH/relaymd/alloc/a1b2-g{i}" for i in range(4)]
    snippet = scheduler.submit_snippet(slot(0), "$SCRATCH/relaymd/alloc/a1b2-g0/job.sh")
    assert "--job-name=relaymd-a1b2 " in snippet
    # A one-GPU allocation is unchanged: its own id, no slot folders.
    single = slot(0).model_copy(update={"id": "a9", "group_id": None, "slot_count": 1})
    context = scheduler.script_context(single, profile(), [])
    assert context.job_name == "relaymd-a9" and context.slot_dirs == []
    # The query maps the job name back to the group id the slots are looked up by.
    assert scheduler.allocation_id_from_name("relaymd-a1b2") == "a1b2"


def test_the_profile_probe_renders_a_multi_gpu_partitions_group_script() -> None:
    from relaymd.scheduler.job_script import probe_allocations

    [probe] = probe_allocations(profile())
    assert probe.group_id is not None and probe.slot_count == 4
    context = SlurmScheduler(profile()).script_context(probe, profile(), [])
    assert len(context.slot_dirs) == 4 and context.job_name == f"relaymd-{probe.group_id}"
