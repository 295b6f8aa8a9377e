"""A cycle's SQL work follows what changed, not what exists (ADR 0021).

The real ClusterRunner over the real local transport (bash, the real read script, mailbox
folders on disk) and a real SQLite file. What the cycle did to the database is counted from
outside the code under test: SQLite's own trace of the statements the daemon's connection ran,
and TEMP triggers on that connection that log every row written to `jobs` and `allocations`.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from relaymd.daemon.runner import ClusterRunner
from relaymd.mailbox.models import EventKind, Heartbeat, WorkerEvent, WorkerState
from relaymd.models import (
    ClusterProfile,
    DaemonSettings,
    JobState,
    OperatorRequest,
    Partition,
    Segment,
    utcnow,
)
from relaymd.state import AsyncStateStore, StateStore
from tests.daemon.daemon_factories import make_alloc, make_job
from tests.support.fake_cluster import make_fake_runners

WRITE_LOG = """
CREATE TEMP TABLE row_writes (tbl TEXT NOT NULL, id TEXT NOT NULL);
CREATE TEMP TRIGGER log_job_update AFTER UPDATE ON main.jobs
    BEGIN INSERT INTO row_writes VALUES ('jobs', NEW.id); END;
CREATE TEMP TRIGGER log_job_insert AFTER INSERT ON main.jobs
    BEGIN INSERT INTO row_writes VALUES ('jobs', NEW.id); END;
CREATE TEMP TRIGGER log_alloc_update AFTER UPDATE ON main.allocations
    BEGIN INSERT INTO row_writes VALUES ('allocations', NEW.id); END;
CREATE TEMP TRIGGER log_alloc_insert AFTER INSERT ON main.allocations
    BEGIN INSERT INTO row_writes VALUES ('allocations', NEW.id); END;
"""


class Campaign:
    """`running` jobs on running allocations (every partition full) and `queued` waiting."""

    def __init__(self, tmp_path: Path, running: int, queued: int) -> None:
        self.scratch = tmp_path / "scratch"
        self.running, self.queued = running, queued
        self.profile = ClusterProfile(
            name="c1",
            transport="local",
            scheduler="slurm",
            scratch=str(self.scratch),
            # Full: no room to submit, no spare, so the backlog just waits.
            partitions=[
                Partition(name="p1", walltime_minutes=240, max_pending=0, max_running=running)
            ],
            native_worker=["worker"],
        )
        self.seq: dict[str, int] = {}
        self.statements: list[str] = []
        self.calls = 0  # statements the store handed to SQLite (a batch counts once)

    def alloc_id(self, i: int) -> str:
        return f"a{i:05d}"

    def beat(self, i: int, *, ns_per_day: float = 100.0) -> None:
        """Worker i's atomic heartbeat rewrite, seq moved."""
        alloc_id = self.alloc_id(i)
        self.seq[alloc_id] = self.seq.get(alloc_id, 0) + 1
        beat = Heartbeat(
            allocation_id=alloc_id,
            seq=self.seq[alloc_id],
            state=WorkerState.RUNNING,
            job_id=f"j{i:05d}",
            epoch=1,
            step=1000 * self.seq[alloc_id],
            total_steps=100,
            ns_per_day=ns_per_day,
        )
        path = self.scratch / "alloc" / alloc_id / "heartbeat.json"
        path.with_suffix(".tmp").write_text(beat.model_dump_json())
        path.with_suffix(".tmp").replace(path)

    def started(self, i: int) -> None:
        """Worker i appends its `started` event (the first MD step of its segment)."""
        alloc_id = self.alloc_id(i)
        event = WorkerEvent(
            kind=EventKind.STARTED, allocation_id=alloc_id, job_id=f"j{i:05d}", epoch=1
        )
        with open(self.scratch / "alloc" / alloc_id / "events.jsonl", "a") as fh:
            fh.write(event.model_dump_json() + "\n")

    async def start(
        self, tmp_path: Path, *, write_every: int | None = None
    ) -> tuple[ClusterRunner, AsyncStateStore]:
        """`write_every`: the daemon's `heartbeat_write_every` (its default if None)."""
        settings = (
            None if write_every is None else DaemonSettings(heartbeat_write_every=write_every)
        )
        fake = await make_fake_runners(tmp_path, {"c1": self.profile}, settings=settings)
        with StateStore.open(fake.store.path) as sync, sync.transaction():
            for i in range(self.running):
                alloc_id = self.alloc_id(i)
                (self.scratch / "alloc" / alloc_id).mkdir(parents=True)
                self.beat(i)
                sync.insert_job(
                    make_job(f"j{i:05d}", state=JobState.RUNNING, epoch=1, allocation_id=alloc_id)
                )
                sync.insert_allocation(
                    make_alloc(
                        alloc_id,
                        job_id=f"j{i:05d}",
                        scheduler_id=str(100 + i),
                        started_at=utcnow() - timedelta(seconds=60),
                    )
                )
                sync.insert_segment(
                    Segment(
                        job_id=f"j{i:05d}",
                        epoch=1,
                        allocation_id=alloc_id,
                        cluster="c1",
                        started_at=utcnow() - timedelta(seconds=60),
                    )
                )
            for i in range(self.queued):
                sync.insert_job(make_job(f"q{i:06d}", created_s=i))
        lines = [f"{self.alloc_id(i)} {100 + i} running\n" for i in range(self.running)]
        (self.scratch / "queue").write_text("".join(lines))
        conn = fake.store._conn
        await conn.executescript(WRITE_LOG)
        execute = fake.store._execute

        async def counted(statement: Any) -> Any:
            self.calls += 1
            return await execute(statement)

        fake.store._execute = counted  # type: ignore[method-assign]
        await conn.set_trace_callback(self.statements.append)
        return fake.runners["c1"], fake.store

    async def cycle(self, runner: ClusterRunner, store: AsyncStateStore) -> tuple[int, Counter]:
        """One cycle: (statements SQLite ran, rows written per table)."""
        conn = store._conn
        self.statements.clear()
        await conn.execute("DELETE FROM row_writes")
        report = await runner.cycle()
        assert report.ok, report.error
        ran = len([s for s in self.statements if "row_writes" not in s])
        async with conn.execute("SELECT tbl FROM row_writes") as cursor:
            writes = Counter(row[0] for row in await cursor.fetchall())
        return ran, writes


async def quiet_cycle_cost(tmp_path: Path, running: int, queued: int) -> tuple[int, Counter]:
    campaign = Campaign(tmp_path, running, queued)
    runner, store = await campaign.start(tmp_path)
    try:
        await campaign.cycle(runner, store)  # the first poll reads every heartbeat
        return await campaign.cycle(runner, store)  # nothing moved since
    finally:
        await store.close()


async def test_a_quiet_cycle_runs_the_same_few_statements_at_any_scale(tmp_path: Path) -> None:
    small = await quiet_cycle_cost(tmp_path / "small", running=10, queued=100)
    large = await quiet_cycle_cost(tmp_path / "large", running=1000, queued=10_000)
    statements, writes = large
    assert writes == Counter(), "a quiet cycle writes no job or allocation row"
    # A handful of reads and the poll's status row, whatever exists: not 1 per row. (Each of
    # the cycle's two looks at the kept rows asks `data_version` and drains the change log;
    # the first also reads back the rows the first poll wrote, ADR 0031.)
    assert statements == small[0]
    assert statements <= 22, statements


async def test_rows_are_read_back_only_when_written(tmp_path: Path) -> None:
    """The live rows are kept between cycles (ADR 0031): the next cycle reads back exactly
    the rows the last one wrote (counted by this test's own write log), a quiet cycle none;
    after the CLI writes (another connection), everything is read once again."""
    campaign = Campaign(tmp_path, running=1000, queued=10_000)
    runner, store = await campaign.start(tmp_path, write_every=1)
    try:
        _, wrote = await campaign.cycle(runner, store)
        assert wrote == Counter(allocations=1000, jobs=1000)
        full, read = store.live.full_reads, store.live.rows_read
        await campaign.cycle(runner, store)
        assert store.live.rows_read - read == wrote.total()
        full, read = store.live.full_reads, store.live.rows_read
        _, wrote = await campaign.cycle(runner, store)
        assert wrote == Counter()
        assert (store.live.full_reads, store.live.rows_read) == (full, read)
        with StateStore.open(store.path) as cli:  # `relaymd cancel` of a queued job
            job = cli.get_job("q000001")
            assert job is not None
            cli.update_job(job.model_copy(update={"operator_request": OperatorRequest.CANCEL}))
        await campaign.cycle(runner, store)
        assert store.live.full_reads == full + 1
        # The cancel was carried out, from the rows read again.
        with sqlite3.connect(f"file:{store.path}?mode=ro", uri=True) as file:
            row = file.execute("SELECT state FROM jobs WHERE id = 'q000001'").fetchone()
        assert row == (JobState.CANCELLED.value,)
    finally:
        await store.close()


async def test_one_heartbeat_moved_writes_one_row(tmp_path: Path) -> None:
    """Writing every heartbeat's news (`heartbeat_write_every: 1`): one moved heartbeat, one
    row; the speed moved too, its job's row as well."""
    campaign = Campaign(tmp_path, running=1000, queued=10_000)
    runner, store = await campaign.start(tmp_path, write_every=1)
    try:
        _, first = await campaign.cycle(runner, store)
        # The first poll notes 1 000 heartbeats (the allocation rows) and their jobs' speed.
        assert first == Counter(allocations=1000, jobs=1000)
        quiet, _ = await campaign.cycle(runner, store)

        campaign.beat(7)  # seq moved: the allocation's liveness row changes
        statements, writes = await campaign.cycle(runner, store)
        assert writes == Counter(allocations=1)
        assert statements <= quiet + 4  # the write transaction: begin, one update, commit

        campaign.beat(8, ns_per_day=120.0)  # the speed moved too: its job row changes
        _, writes = await campaign.cycle(runner, store)
        assert writes == Counter(allocations=1, jobs=1)

        for i in range(100):
            campaign.beat(i, ns_per_day=120.0 if i == 8 else 100.0)
        statements, writes = await campaign.cycle(runner, store)
        assert writes == Counter(allocations=100)
        # SQLite's trace reports each row of the one batched UPDATE, with the triggers it
        # fires (the status counters', the kept rows' change log and this test's own): a few
        # per row written, nothing for the 10 900 rows that did not change.
        assert statements - quiet <= 4 + 5 * 100, statements
    finally:
        await store.close()


async def test_heartbeat_news_reaches_the_file_once_every_few_beats(tmp_path: Path) -> None:
    """The shipped default writes a moving heartbeat's news on every 4th beat of each
    allocation, staggered (ADR 0027): over 4 polls where every heartbeat and speed moved,
    each allocation and job row is written exactly once, and no poll writes most of them.
    The rows the file has are checked too: each holds one of its worker's last 4 beats."""
    campaign = Campaign(tmp_path, running=200, queued=100)
    runner, store = await campaign.start(tmp_path)
    try:
        _, first = await campaign.cycle(runner, store)
        assert first == Counter(allocations=200, jobs=200)  # first news: written at once
        per_poll: list[Counter[str]] = []
        for n in range(4):
            for i in range(200):
                campaign.beat(i, ns_per_day=101.0 + n)
            per_poll.append((await campaign.cycle(runner, store))[1])
        total = sum(per_poll, Counter[str]())
        assert total == Counter(allocations=200, jobs=200), per_poll
        assert max(c["allocations"] for c in per_poll) <= 100, per_poll
        async with store._conn.execute(
            "SELECT json_extract(data, '$.last_seq') FROM allocations"
        ) as cursor:
            stored_seqs = [row[0] for row in await cursor.fetchall()]
        newest = campaign.seq[campaign.alloc_id(0)]
        assert all(newest - 3 <= seq <= newest for seq in stored_seqs), stored_seqs
    finally:
        await store.close()


async def test_worker_events_cost_the_same_statements_however_many(tmp_path: Path) -> None:
    """Each `started` event records its segment's worker time and an audit row: batched, so
    the statements handed to SQLite do not grow with the number of events (the rows do)."""
    campaign = Campaign(tmp_path, running=60, queued=100)
    runner, store = await campaign.start(tmp_path)
    try:
        await campaign.cycle(runner, store)
        await campaign.cycle(runner, store)

        def calls_for(workers: range) -> int:
            for i in workers:
                campaign.beat(i)
                campaign.started(i)
            return campaign.calls

        calls_for(range(1))
        await campaign.cycle(runner, store)  # after a cycle that wrote rows, as the next two
        before = calls_for(range(1, 2))
        await campaign.cycle(runner, store)
        one = campaign.calls - before
        before = calls_for(range(10, 60))
        await campaign.cycle(runner, store)
        fifty = campaign.calls - before
        assert fifty == one, (one, fifty)
        async with store._conn.execute(
            "SELECT COUNT(*) FROM segments WHERE json_extract(data, '$.worker_started_at')"
            " IS NOT NULL"
        ) as cursor:
            assert (await cursor.fetchone()) == (52,)
        async with store._conn.execute(
            "SELECT COUNT(*) FROM events WHERE allocation_id IS NOT NULL"
        ) as cursor:
            audits = (await cursor.fetchone())[0]
        assert audits >= 52, audits
    finally:
        await store.close()
