"""Handoff at the real deadline on SLURM: the walltime warning (SIGUSR1, sent by SLURM up to
60 s early) must not cut the segment. Verdict from SLURM's accounting (sacct elapsed vs time
limit) for every allocation whose worker handed off at its deadline."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import handoff_loss
from tests.testbed.testbed import require_testbed

pytestmark = [pytest.mark.testbed, pytest.mark.slow, pytest.mark.timeout(600)]

MARGIN_MAX_S = 12.0


def test_one_minute_allocations_hand_off_near_their_real_end(tmp_path: Path) -> None:
    tb = require_testbed()
    figs, _ = handoff_loss.relay(
        tb,
        tmp_path,
        minutes=1,
        jobs=1,
        allocations_per_job=2,
        poll_s=2,
        cluster="clustera",
        margin_max_s=MARGIN_MAX_S,
    )
    handoffs = [f for f in figs if f.ended_by == "handoff"]
    assert handoffs, figs
    for f in handoffs:
        # SLURM's own clock: the allocation ran until its time limit minus at most the
        # handoff margin (plus sacct's whole-second rounding). With the warning as TERM@30
        # these allocations ended after 7-30 s.
        assert f.timelimit_s == 60
        assert f.elapsed_s >= f.timelimit_s - MARGIN_MAX_S - 2, f
        assert f.slurm_state == "COMPLETED", f  # handed off before SLURM had to kill it
