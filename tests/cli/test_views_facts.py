"""What the report derives from a relay history: handoff gaps, queue waits per
cluster/partition, failure causes, per-cluster GPU time; checked against the written plan."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

from relaymd.models import SegmentOutcome, utcnow
from relaymd.state.readonly import open_readonly
from relaymd.views.relay_facts import failure_causes, handoff_gaps, queue_waits
from relaymd.views.snapshot import take_snapshot
from tests.support.relay_history import PARTITION, PLAN, build_history


def test_facts_of_a_relay_history(tmp_path: Path) -> None:
    history = build_history(tmp_path / "state.sqlite")
    with open_readonly(history.path) as store:
        snapshot = take_snapshot(store, utcnow())
    handoffs = [
        (job_id, index + 2, plan[index + 1][0])  # the successor's epoch (1-based), cluster
        for job_id, (_, plan) in PLAN.items()
        for index, (_, outcome, _) in enumerate(plan)
        if outcome is SegmentOutcome.HANDOFF
    ]
    gaps = handoff_gaps(snapshot)
    assert sorted((g.job_id, g.epoch, g.to_cluster) for g in gaps) == sorted(handoffs)
    for gap in gaps:
        if gap.job_id != "jrun":  # its running segment started an hour ago, not after the gap
            # 1 min to the allocation's end, its successor queued 5 + 7 x epoch min, 2 min start
            assert timedelta(seconds=gap.lost_s) == timedelta(minutes=1 + 5 + 7 * gap.epoch + 2)
    per_cluster = Counter(cluster for _, plan in PLAN.values() for cluster, _, _ in plan)
    waits = queue_waits(snapshot)
    assert {where: len(w) for where, w in waits.items()} == {
        f"{name}/{PARTITION[name]}": count for name, count in per_cluster.items()
    }
    causes = {(c.outcome, c.reason): (c.segments, c.jobs) for c in failure_causes(snapshot)}
    assert causes == {
        (SegmentOutcome.FAILED, "engine error: NaN in coordinates"): (2, ["jfail"]),
        (SegmentOutcome.LOST, "heartbeat stale: node failure"): (1, ["jrun"]),
        (SegmentOutcome.STOPPED, "allocation ended: node drained"): (1, ["jstop"]),
        (SegmentOutcome.CANCELLED, "cancelled by operator"): (1, ["jcancel"]),
    }
    assert set(snapshot.usage_by_cluster) == set(PARTITION)
    for usage in snapshot.usage_by_cluster.values():
        assert 0 < usage.simulating_gpu_s < usage.allocated_gpu_s
