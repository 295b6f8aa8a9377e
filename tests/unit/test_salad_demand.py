"""The Salad replica policy (ADR 0025): demand, HPC first, cap, budget, idle to zero."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relaymd.models.salad import SaladSettings
from relaymd.providers.salad.demand import (
    Demand,
    WaitingJob,
    Why,
    plan_replicas,
    replica_hours_today,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _settings(**kw: object) -> SaladSettings:
    base: dict[str, object] = dict(
        organization="lab", project="md", container_group="relay", image="img:1",
        max_replicas=3, wait_before_s=600, budget_replica_hours_per_day=10,
    )  # fmt: skip
    base.update(kw)
    return SaladSettings.model_validate(base)


def _job(name: str, waited_s: float, image: str = "openmm") -> WaitingJob:
    return WaitingJob(job_id=name, image=image, waiting_since=NOW - timedelta(seconds=waited_s))


def _demand(*jobs: WaitingJob, **kw: object) -> Demand:
    base: dict[str, object] = dict(now=NOW, image="openmm", waiting=list(jobs),
                                   other_images={"openmm"})  # fmt: skip
    base.update(kw)
    return Demand.model_validate(base)


def test_nothing_waiting_and_nothing_busy_scales_to_zero() -> None:
    plan = plan_replicas(_demand(current=2), _settings())
    assert plan.replicas == 0 and plan.why is Why.IDLE


def test_hpc_is_preferred_until_a_job_has_waited_the_threshold() -> None:
    plan = plan_replicas(_demand(_job("fresh", 599)), _settings())
    assert plan.replicas == 0 and plan.for_jobs == []
    plan = plan_replicas(_demand(_job("fresh", 599), _job("old", 601)), _settings())
    assert plan.replicas == 1 and plan.for_jobs == ["old"] and plan.why is Why.DEMAND


def test_a_job_only_salad_can_run_goes_at_once() -> None:
    plan = plan_replicas(_demand(_job("new", 0), other_images={"atom"}), _settings())
    assert plan.replicas == 1 and plan.for_jobs == ["new"]


def test_jobs_of_another_image_are_not_salad_demand() -> None:
    plan = plan_replicas(_demand(_job("a", 9999, image="atom")), _settings())
    assert plan.replicas == 0


def test_busy_replicas_are_kept_and_added_to() -> None:
    plan = plan_replicas(_demand(_job("old", 700), busy=1, current=1), _settings())
    assert plan.replicas == 2
    plan = plan_replicas(_demand(busy=2, current=2), _settings())
    assert plan.replicas == 2 and plan.why is Why.DEMAND


def test_never_above_the_cap() -> None:
    jobs = [_job(f"j{i}", 9999) for i in range(7)]
    plan = plan_replicas(_demand(*jobs), _settings(max_replicas=3))
    assert plan.replicas == 3 and plan.why is Why.CAPPED and len(plan.for_jobs) == 7


def test_a_spent_budget_stops_scale_up_but_not_scale_down() -> None:
    jobs = [_job(f"j{i}", 9999) for i in range(3)]
    spent = plan_replicas(_demand(*jobs, current=1, used_replica_hours=10.0), _settings())
    assert spent.replicas == 1 and spent.why is Why.BUDGET_SPENT
    left = plan_replicas(_demand(*jobs, current=1, used_replica_hours=9.9), _settings())
    assert left.replicas == 3
    idle = plan_replicas(_demand(current=2, used_replica_hours=50.0), _settings())
    assert idle.replicas == 0


def test_replica_hours_count_only_today_utc() -> None:
    midnight = datetime(2026, 12, 4, tzinfo=UTC)
    spans = [
        (midnight - timedelta(hours=3), midnight + timedelta(hours=1)),  # 1 h today
        (NOW - timedelta(hours=2), None),  # still running: 2 h
        (midnight - timedelta(hours=5), midnight - timedelta(hours=4)),  # yesterday
    ]
    assert abs(replica_hours_today(spans, NOW) - 3.0) < 1e-9
