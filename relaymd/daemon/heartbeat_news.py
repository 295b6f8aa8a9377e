"""Heartbeat news held in memory between writes (ADR 0027).

Every moving heartbeat changes two rows: the allocation's liveness (`last_seq`, and
`seq_changed_at` on the daemon's clock) and its job's speed (`ns_per_day`, `total_steps`).
Decide always works from the newest news (hang detection included); the state file gets it
on every `write_every`-th heartbeat of each allocation, or at once with any other change of
the row. Which heartbeat is written is staggered by allocation, so a campaign writes about
1/`write_every` of its rows per poll, never all of them in one.

What is held is only ever newer than the row it was derived from: a row read back as it was
stored gets the news laid over it; a row some writer changed since drops the news (the next
heartbeat brings it again). Losing held news (a restart) is safe: after a restart liveness
counts from the daemon's start anyway (relaymd.daemon.liveness), and a lagging `last_seq`
only makes the first heartbeat read count as moved at that moment.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from relaymd.daemon.decide.decisions import CycleDecisions
from relaymd.models import Allocation, Job

R = TypeVar("R", Allocation, Job)


@dataclass
class _Held(Generic[R]):
    stored: R  # the row as the state file has it
    newest: R  # with the news decide made since


def _laid_over(rows: Iterable[R], held: dict[str, _Held[R]]) -> tuple[list[R], dict[str, _Held[R]]]:
    """The rows with their news, and the news still held (of rows read as stored)."""
    out: list[R] = []
    kept: dict[str, _Held[R]] = {}
    for row in rows:
        entry = held.get(row.id)
        if entry is not None and (row is entry.stored or row == entry.stored):
            kept[row.id] = entry
            out.append(entry.newest)
        else:  # none held, or another write since: what the file has now wins
            out.append(row)
    return out, kept


def _due(alloc_id: str, stored_seq: int | None, seq: int | None, every: int) -> bool:
    """Whether this heartbeat of `alloc_id` is one the state file gets: one in `every`,
    at a phase fixed per allocation."""
    if every <= 1 or stored_seq is None or seq is None or seq <= stored_seq:
        return True
    phase = zlib.crc32(alloc_id.encode()) % every
    return (seq + phase) // every != (stored_seq + phase) // every


@dataclass
class NewsToWrite:
    """The changed rows of one cycle the commit writes; the rest of its news is held."""

    allocations: list[Allocation]
    jobs: list[tuple[Job, Job]]  # (job, as stored): its compare-and-set is on the stored row
    held_allocations: dict[str, _Held[Allocation]]
    held_jobs: dict[str, _Held[Job]]


@dataclass
class HeldNews:
    allocations: dict[str, _Held[Allocation]] = field(default_factory=dict)
    jobs: dict[str, _Held[Job]] = field(default_factory=dict)

    def lay_over_allocations(self, rows: list[Allocation]) -> list[Allocation]:
        """The rows as read, each with the news held for it; news of a row not read, or
        written by another since, is dropped."""
        if not self.allocations:
            return rows
        laid, self.allocations = _laid_over(rows, self.allocations)
        return laid

    def lay_over_jobs(self, jobs: dict[str, Job]) -> dict[str, Job]:
        if not self.jobs:
            return jobs
        laid, self.jobs = _laid_over(jobs.values(), self.jobs)
        return {j.id: j for j in laid}

    def split(
        self,
        d: CycleDecisions,
        read_allocations: Mapping[str, Allocation],
        read_jobs: Mapping[str, Job],
        write_every: int,
    ) -> NewsToWrite:
        """Which of `d`'s changed rows to write now. `read_*` are the copies decide read
        (news laid over); a job's news is written with its allocation's."""
        held_allocs: dict[str, _Held[Allocation]] = {}
        allocations: list[Allocation] = []
        for alloc in d.allocations.values():
            if alloc.id in d.news_allocations:
                entry = self.allocations.get(alloc.id)
                stored = entry.stored if entry is not None else read_allocations.get(alloc.id)
                if stored is not None and not _due(
                    alloc.id, stored.last_seq, alloc.last_seq, write_every
                ):
                    held_allocs[alloc.id] = _Held(stored, alloc)
                    continue
            allocations.append(alloc)
        held_jobs: dict[str, _Held[Job]] = {}
        jobs: list[tuple[Job, Job]] = []
        for job in d.jobs.values():
            entry_job = self.jobs.get(job.id)
            stored_job = entry_job.stored if entry_job is not None else read_jobs[job.id]
            if job.id in d.news_jobs and job.allocation_id in held_allocs:
                held_jobs[job.id] = _Held(stored_job, job)
            else:
                jobs.append((job, stored_job))
        # Older news of a job not changed this cycle goes with its allocation's row.
        written_allocs = {a.id for a in allocations}
        jobs += [
            (entry.newest, entry.stored)
            for job_id, entry in self.jobs.items()
            if job_id not in d.jobs and entry.newest.allocation_id in written_allocs
        ]
        return NewsToWrite(allocations, jobs, held_allocs, held_jobs)

    def everything(self) -> NewsToWrite:
        """All held news as rows to write (a clean stop writes it: ADR 0027)."""
        return NewsToWrite(
            allocations=[e.newest for e in self.allocations.values()],
            jobs=[(e.newest, e.stored) for e in self.jobs.values()],
            held_allocations={},
            held_jobs={},
        )

    def after_commit(self, written: NewsToWrite) -> None:
        """The cycle committed: what it wrote is stored, what it held is the newest news."""
        for alloc in written.allocations:
            self.allocations.pop(alloc.id, None)
        for job, _ in written.jobs:
            self.jobs.pop(job.id, None)
        self.allocations.update(written.held_allocations)
        self.jobs.update(written.held_jobs)
