"""The seeded short chaos campaign (bench/chaos.py --short) on the two-cluster testbed.

One fault of each kind (worker and engine SIGKILL, scancel, node down, sshd stopped, daemon
SIGKILL and offline, moto frozen, a worker frozen with its heartbeat half-written, a checkpoint
object corrupted) hits one OpenMM and two AToM-like jobs on 1-minute allocations. The verdict
comes from the outputs: bitwise OpenMM result, every sample once and in order, no resume from
a stale epoch, every job completed; and the testbed is left healthy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import render, run_campaign, short_plan
from bench.chaos_faults import FaultKind
from tests.testbed.testbed import health_problems, require_testbed

pytestmark = [pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(480)]

SEED = 7


def test_short_chaos_campaign_keeps_every_sample_and_bit(tmp_path: Path) -> None:
    tb = require_testbed()
    report = run_campaign(short_plan(SEED), tmp_path)
    table = render(report)
    print(table)
    # The jobs carry more pure work (samples x cycle time) than the fault phase lasts, so
    # every fault finds a target.
    injected = {f.kind for f in report.faults if f.injected}
    assert injected == set(FaultKind), [(f.kind.value, f.note) for f in report.faults]
    assert not report.problems, table
    assert all(j.completed for j in report.jobs)
    assert sum(j.samples for j in report.jobs) > 0
    assert not health_problems(tb)
