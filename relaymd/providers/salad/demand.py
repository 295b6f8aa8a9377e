"""How many Salad replicas to ask for (ADR 0025): pure, so the policy is tested alone.

HPC first: a waiting job counts for Salad only once it has waited `wait_before_s`, or at once
when no other enabled cluster can run its image. Replicas already carrying a job are kept.
Never above `max_replicas`; once the day's replica-hours are spent, never above what runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from relaymd.models.salad import SaladSettings


class WaitingJob(BaseModel):
    job_id: str
    image: str
    waiting_since: datetime


class Demand(BaseModel):
    now: datetime
    image: str  # the image profile Salad replicas run
    waiting: list[WaitingJob] = Field(default_factory=list)
    other_images: set[str] = Field(default_factory=set)  # what the other clusters can run
    busy: int = 0  # Salad allocations bound to a job now
    current: int = 0  # the container group's replica count now
    used_replica_hours: float = 0.0  # today's (UTC) replica-hours so far


class Why(StrEnum):
    IDLE = "idle"
    DEMAND = "demand"
    CAPPED = "capped"
    BUDGET_SPENT = "budget_spent"


class ReplicaPlan(BaseModel):
    replicas: int
    why: Why
    for_jobs: list[str] = Field(default_factory=list)  # waiting jobs Salad takes on


def salad_eligible(job: WaitingJob, demand: Demand, settings: SaladSettings) -> bool:
    """May this waiting job go to Salad now (HPC preferred)?"""
    if job.image != demand.image:
        return False
    if job.image not in demand.other_images:
        return True  # only Salad fits
    waited = (demand.now - job.waiting_since).total_seconds()
    return waited >= settings.wait_before_s


def plan_replicas(demand: Demand, settings: SaladSettings) -> ReplicaPlan:
    jobs = [j.job_id for j in demand.waiting if salad_eligible(j, demand, settings)]
    # Joined idle replicas take waiting jobs this cycle; they are part of `jobs`, not extra.
    wanted = demand.busy + len(jobs)
    if wanted == 0:
        return ReplicaPlan(replicas=0, why=Why.IDLE)
    replicas, why = wanted, Why.DEMAND
    if replicas > settings.max_replicas:
        replicas, why = settings.max_replicas, Why.CAPPED
    if replicas > demand.current and demand.used_replica_hours >= (
        settings.budget_replica_hours_per_day
    ):
        replicas, why = demand.current, Why.BUDGET_SPENT
    return ReplicaPlan(replicas=replicas, why=why, for_jobs=jobs)


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def replica_hours_today(spans: list[tuple[datetime, datetime | None]], now: datetime) -> float:
    """Hours of [start, end or now] spans that fall in today's UTC day."""
    start_of_day = day_start(now)
    total = timedelta()
    for start, end in spans:
        begin, finish = max(start, start_of_day), min(end or now, now)
        if finish > begin:
            total += finish - begin
    return total.total_seconds() / 3600.0
