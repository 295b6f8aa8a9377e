"""The rows the daemon reads every cycle, kept between cycles while nobody else wrote them
(ADR 0031).

Every cycle looks at every live allocation and the jobs bound to them. Read from SQLite each
time, that is ~20 000 rows a round at 10 000 allocations although few of them changed. This
keeps them in memory and asks SQLite only what changed since:

* **another connection's commit** (the CLI's submit or cancel, anyone's): `PRAGMA
  data_version` differs from the value seen last, and everything is read again;
* **this connection's own writes**: temporary triggers (they exist only on this connection)
  log the id of every allocation and job row inserted, updated or deleted into a temporary
  table; each refresh drains it and reads those rows again.

Nothing is ever put here but rows read from the file, inside a transaction that began by
reading `data_version` (which fixes its snapshot, so version and rows agree). A write whose
transaction rolls back may have been read back meanwhile: any rollback forgets everything
(`forget`). The cache can therefore only be as current as the file, never ahead of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from relaymd.models import Allocation, AllocationState, Job
from relaymd.state.plan import Statement, Steps, first_value, reads
from relaymd.state.queries import list_allocations, rows_by_id

CHANGES = "temp.relaymd_changed"
# The jobs kept: those bound to or reserved by live allocations, and a few more (log tails
# owed); past this many, they are read again from scratch.
JOBS_CAP = 65_536
_TABLES = ("allocations", "jobs")
_LIVE = [s for s in AllocationState if not s.is_final]


def change_log() -> tuple[Statement, ...]:
    """The temporary table and triggers that log this connection's row writes (one trigger
    statement per row written)."""
    statements = [Statement("CREATE TEMP TABLE IF NOT EXISTS relaymd_changed (tbl TEXT, id TEXT)")]
    for table in _TABLES:
        for name, event, logged in (
            ("insert", "INSERT", "new.id"),
            ("update", "UPDATE", "new.id"),
            # A row whose key changes (no writer does that) leaves no stale entry behind.
            ("rekey", "UPDATE OF id", "old.id"),
            ("delete", "DELETE", "old.id"),
        ):
            when = " WHEN old.id IS NOT new.id" if name == "rekey" else ""
            statements.append(
                Statement(
                    f"CREATE TEMP TRIGGER IF NOT EXISTS relaymd_{table}_{name}"
                    f" AFTER {event} ON main.{table}{when}"
                    f" BEGIN INSERT INTO relaymd_changed (tbl, id)"
                    f" VALUES ('{table}', {logged}); END"
                )
            )
    return tuple(statements)


def _oldest_first(allocation: Allocation) -> tuple[datetime, str]:
    return (allocation.submitted_at, allocation.id)


class LiveRows:
    """Every live allocation and the jobs asked for, as in the file. The allocations are kept
    three ways, each by id in (submitted_at, id) order, as the store lists them: all of them,
    per cluster, and those bound to no job. A cycle asks for its own cluster's and the unbound
    ones; filtering all 10 000 rows each time cost more than reading them (memory-bound,
    ~0.4 µs a row)."""

    def __init__(self) -> None:
        self.logging = False  # the change log is in place on this connection
        self.version: int | None = None  # data_version when everything was last read
        self.allocations: dict[str, Allocation] = {}
        self.by_cluster: dict[str, dict[str, Allocation]] = {}
        self.unbound: dict[str, Allocation] = {}
        self.jobs: dict[str, Job] = {}
        self.full_reads = 0  # for tests and benchmarks: how often all was read again
        self.rows_read = 0

    def forget(self) -> None:
        """Read everything again next time (a rollback may have left rows never committed, or
        undone the change log's creation)."""
        self.version = None
        self.logging = False

    def load(self, live: list[Allocation]) -> None:
        """Everything, read again (oldest first)."""
        self.allocations = {a.id: a for a in live}
        self.by_cluster = {}
        for a in live:
            self.by_cluster.setdefault(a.cluster, {})[a.id] = a
        self.unbound = {a.id: a for a in live if a.job_id is None}
        self.jobs = {}

    def replace(self, ids: set[str], reread: list[Allocation]) -> None:
        """The allocations `ids` as just read again (`reread`: those of them that exist). A
        row stays in place in each view it was in (dict order); one that enters a view has
        that view sorted again."""
        unordered: dict[int, dict[str, Allocation]] = {}
        for allocation in reread:
            ids.discard(allocation.id)
            old = self.allocations.get(allocation.id)
            if allocation.state.is_final:
                self._drop(allocation.id, old)
                continue
            if old is not None and old.cluster != allocation.cluster:
                self.by_cluster[old.cluster].pop(allocation.id, None)
            views = [self.allocations, self.by_cluster.setdefault(allocation.cluster, {})]
            if allocation.job_id is None:
                views.append(self.unbound)
            else:
                self.unbound.pop(allocation.id, None)
            for view in views:
                if allocation.id not in view:
                    unordered[id(view)] = view
                view[allocation.id] = allocation
        for gone in ids:  # deleted
            self._drop(gone, self.allocations.get(gone))
        for view in unordered.values():
            ordered = sorted(view.values(), key=_oldest_first)
            view.clear()
            view.update((a.id, a) for a in ordered)

    def _drop(self, allocation_id: str, old: Allocation | None) -> None:
        if old is None:  # in no view: each holds only rows `allocations` holds
            return
        del self.allocations[allocation_id]
        self.by_cluster[old.cluster].pop(allocation_id, None)
        self.unbound.pop(allocation_id, None)


def _refresh(rows: LiveRows) -> Steps[None]:
    """Bring `rows` to the file as of this transaction's snapshot."""
    # First: it fixes the snapshot the rows below are read from.
    version = first_value((yield Statement("PRAGMA data_version")))
    if not rows.logging:  # before anything is read: what is read is then logged if it changes
        for statement in change_log():
            _ = yield statement  # not `yield from`: the executor sends each one's result
        rows.logging = True
    changed = yield Statement(f"DELETE FROM {CHANGES} RETURNING tbl, id")
    if version != rows.version:
        live = yield from list_allocations(states=_LIVE).steps
        rows.load(live)
        rows.version = version
        rows.full_reads += 1
        rows.rows_read += len(live)
        return
    allocation_ids = {i for table, i in changed.rows if table == "allocations"}
    for table, job_id in changed.rows:
        if table == "jobs":
            rows.jobs.pop(job_id, None)
    if len(rows.jobs) > JOBS_CAP:
        rows.jobs = {}
    if allocation_ids:
        reread = yield from rows_by_id(Allocation, "allocations", sorted(allocation_ids))
        rows.rows_read += len(reread)
        rows.replace(allocation_ids, reread)


class Kept(NamedTuple):
    """Live allocations (submitting, pending, running), oldest first, and jobs, as in the
    file; the lists are the caller's own."""

    mine: list[Allocation]  # the cluster's asked about
    unbound: list[Allocation]  # every cluster's bound to no job
    jobs: dict[str, Job]  # those of the ids asked for that exist, by id
    everything: list[Allocation]  # every cluster's


@reads
def kept_rows(rows: LiveRows, cluster: str, job_ids: Sequence[str] = ()) -> Steps[Kept]:
    """The live allocations of `cluster` and of no job, and the jobs `job_ids`, from the rows
    kept and what changed since they were read."""
    yield from _refresh(rows)
    wanted = list(dict.fromkeys(job_ids))
    missing = [i for i in wanted if i not in rows.jobs]
    if missing:
        read = yield from rows_by_id(Job, "jobs", missing)
        rows.rows_read += len(read)
        rows.jobs.update((job.id, job) for job in read)
    jobs = {i: rows.jobs[i] for i in wanted if i in rows.jobs}
    mine = list(rows.by_cluster.get(cluster, {}).values())
    return Kept(mine, list(rows.unbound.values()), jobs, list(rows.allocations.values()))
