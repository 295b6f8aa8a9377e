"""GPU slots on the two-cluster testbed (ADR 0026): six one-GPU jobs and one two-GPU AToM-like
job relayed over 4-GPU allocations with handoffs, one slot's worker killed with SIGKILL.

Verdicts from outside the daemon: the jobs' sample files in the bucket (each sample exactly
once), the workers' events in every slot folder (no device used by two engines at once), the
supervisor's slot_exited events and sacct (4-GPU allocations, all ended)."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest

from relaymd.mailbox.models import EventKind
from relaymd.models import JobState
from tests.daemon.slots_testbed_scenario import (
    SAMPLES,
    Busy,
    final_outputs,
    run_scenario,
    scenario_store,
)
from tests.testbed.testbed import require_testbed
from tests.worker.atom_like import REPLICAS, assert_exactly_once, reference_run

pytestmark = [pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(900)]


def overlapping(a: Busy, b: Busy) -> bool:
    assert a.end is not None and b.end is not None
    return a.start < b.end and b.start < a.end


def test_slots_relay_on_the_testbed(tmp_path: Path) -> None:
    tb = require_testbed()
    if any(c.gpus < 4 for c in tb.clusters):
        pytest.fail("testbed.json lists no GPUs: re-run tests/testbed/up.sh", pytrace=False)
    reference = reference_run(tmp_path / "reference", SAMPLES)
    result = run_scenario(tmp_path / "run", tb)

    # Every job completes, each sample exactly once in its final sample files.
    assert all(s is JobState.COMPLETED for s in result.final_states.values()), result.final_states
    store = scenario_store(tmp_path / "run")
    for job_id in result.jobs:
        assert_exactly_once(final_outputs(store, job_id, REPLICAS), reference, SAMPLES)

    # Engines ran on both clusters, with handoffs; the 2-GPU job on two devices each time.
    assert {b.cluster for b in result.busy} == {c.name for c in tb.clusters}
    assert result.handoffs >= 1
    two = [b for b in result.busy if b.job_id == result.two_gpu_job]
    assert two and all(len(b.devices) == 2 for b in two), two
    assert all(len(b.devices) == 1 for b in result.busy if b.job_id != result.two_gpu_job)
    # Every engine run ended (its end event, or its slot's slot_exited).
    assert all(b.end is not None for b in result.busy), [b for b in result.busy if b.end is None]

    # No device of a node served two engine runs at overlapping times.
    by_device: dict[tuple[str, str], list[Busy]] = {}
    for span in result.busy:
        for device in span.devices:
            assert device in {"0", "1", "2", "3"}, span
            by_device.setdefault((span.cluster, device), []).append(span)
    clashes = [
        (a, b)
        for spans in by_device.values()
        for a, b in combinations(spans, 2)
        if (a.job_id, a.epoch) != (b.job_id, b.epoch) and overlapping(a, b)
    ]
    assert not clashes, clashes

    # The killed slot: reported by its supervisor as SIGKILL, its job resumed elsewhere.
    assert [e.exit_code for e in result.slot_exits[result.victim_slot]] == [-9]
    victim_runs = [b for b in result.busy if b.job_id == result.victim_job]
    assert any(b.slot != result.victim_slot for b in victim_runs), victim_runs
    assert any(b.end_kind is EventKind.SLOT_EXITED for b in victim_runs), victim_runs
    # Every slot's worker (where one ran) exited once, as its supervisor reports.
    for slot, exits in result.slot_exits.items():
        assert len(exits) == 1, (slot, exits)

    # sacct: every group that ran is one 4-GPU SLURM job, ended; the others never started.
    groups = {g.group: g for g in result.groups}
    assert len(groups) == len(result.groups)
    ran = {slot.rsplit("-g", 1)[0] for slot in result.slot_exits}
    assert len(ran) >= 2 and ran <= set(groups)
    for name, group in groups.items():
        if name in ran:
            assert "gres/gpu=4" in group.alloc_tres, group
            assert group.start is not None and group.end is not None, group
        else:
            assert group.start is None and group.state.startswith("CANCELLED"), group
