"""`relaymd status` at any size: trigger-maintained counters (schema v3) that stay exact,
a status read whose work does not grow with the number of jobs, and daemon queries that
never scan a big table. Verdicts come from SQLite itself (COUNT(*), the trace callback,
the VM progress handler, EXPLAIN QUERY PLAN), not from the store's own answers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from relaymd.daemon.read_step import LIVE_STATES
from relaymd.models import AllocationState, ClusterStatus, JobState, SegmentOutcome
from relaymd.state import AsyncStateStore, StateStore
from relaymd.state.schema import MIGRATIONS
from tests.unit.test_state_helpers import make_allocation, make_job, make_segment

BIG_TABLES = ("jobs", "allocations", "segments", "events")


def true_counts(path: Path) -> tuple[dict[str, int], float, dict[tuple[str, str], int]]:
    """Counts straight from the tables, on a separate connection."""
    conn = sqlite3.connect(path)
    try:
        jobs = dict(conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        rate = conn.execute(
            "SELECT TOTAL(ns_per_day) FROM jobs WHERE state = 'running'"
        ).fetchone()[0]
        allocations = {
            (c, s): n
            for c, s, n in conn.execute(
                "SELECT cluster, state, COUNT(*) FROM allocations GROUP BY cluster, state"
            )
        }
    finally:
        conn.close()
    return jobs, float(rate), allocations


def assert_summary_exact(store: StateStore) -> None:
    jobs, rate, allocations = true_counts(store.path)
    summary = store.status_summary()
    assert {s.value: n for s, n in summary.jobs.items() if n} == jobs
    assert summary.total_jobs == sum(jobs.values())
    assert summary.running_jobs == jobs.get("running", 0)
    assert summary.running_ns_per_day == pytest.approx(rate, abs=1e-6)
    assert {(a.cluster, a.state.value): a.count for a in summary.allocations} == allocations
    assert {s.value: n for s, n in store.count_jobs_by_state().items() if n} == jobs


async def test_counters_stay_exact_through_every_write_path(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with StateStore.open(path) as store:
        # Submits, one by one and in a batch transaction.
        for i in range(6):
            store.insert_job(make_job(f"j{i}", created_s=i))
        with store.transaction():
            for i in range(6, 12):
                store.insert_job(make_job(f"j{i}", created_s=i))
        assert_summary_exact(store)

        # Transitions through update_job: assign, run with a rate, change the rate, finish.
        for i in range(4):
            job = store.get_job(f"j{i}")
            assert job is not None
            job = store.update_job(job.model_copy(update={"state": JobState.ASSIGNED}))
            store.update_job(
                job.model_copy(update={"state": JobState.RUNNING, "ns_per_day": 10.25 * (i + 1)})
            )
        job = store.get_job("j0")
        assert job is not None
        store.update_job(job.model_copy(update={"ns_per_day": 0.1}))
        job = store.get_job("j1")
        assert job is not None
        store.update_job(job.model_copy(update={"state": JobState.COMPLETED}))
        job = store.get_job("j2")
        assert job is not None
        # Not a state change: counters untouched.
        store.update_job_at_epoch(job.model_copy(update={"epoch": 1}), 0)
        # Cancels.
        for job_id in ("j5", "j6"):
            job = store.get_job(job_id)
            assert job is not None
            store.update_job(job.model_copy(update={"state": JobState.CANCELLED}))
        assert_summary_exact(store)

        # A transaction that fails rolls its counter changes back with it.
        with pytest.raises(RuntimeError), store.transaction():
            store.insert_job(make_job("j-rolled-back"))
            job = store.get_job("j7")
            assert job is not None
            store.update_job(job.model_copy(update={"state": JobState.HELD}))
            raise RuntimeError("abort")
        assert_summary_exact(store)

        # Allocations on two clusters, moving through their states.
        for i, cluster in enumerate(("clusterA", "clusterB", "clusterA")):
            store.insert_allocation(make_allocation(f"a{i}", cluster=cluster))
        allocation = store.get_allocation("a0")
        assert allocation is not None
        store.update_allocation(allocation.model_copy(update={"state": AllocationState.RUNNING}))
        assert_summary_exact(store)

    # The daemon's front-end writes through the same triggers.
    async with await AsyncStateStore.open(path) as astore:
        job = await astore.get_job("j8")
        assert job is not None
        await astore.update_job(
            job.model_copy(update={"state": JobState.RUNNING, "ns_per_day": 7.5})
        )
        allocation = await astore.get_allocation("a1")
        assert allocation is not None
        await astore.update_allocation(
            allocation.model_copy(update={"state": AllocationState.ENDED})
        )

    # Rows written or removed by plain SQL (another tool, a retention sweep) count too.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DELETE FROM jobs WHERE id IN ('j1', 'j9', 'j3')")
    conn.execute("DELETE FROM allocations WHERE id = 'a2'")
    conn.execute("UPDATE jobs SET state = 'failed' WHERE id = 'j10'")
    conn.close()
    with StateStore.open(path) as store:
        assert_summary_exact(store)


def test_a_version_2_file_is_back_filled(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with StateStore.open(path) as store, store.transaction():
        for i, state in enumerate([*JobState, JobState.RUNNING, JobState.QUEUED]):
            store.insert_job(
                make_job(f"j{i}", state=state, ns_per_day=1.5 + i if state == "running" else None)
            )
        for i, cluster in enumerate(("clusterA", "clusterB", "clusterB")):
            store.insert_allocation(make_allocation(f"a{i}", cluster=cluster))
    expected = true_counts(path)
    # Take the file back to version 2, as an older RelayMD left it.
    conn = sqlite3.connect(path, isolation_level=None)
    for name in ("job_counts", "allocation_counts"):
        conn.execute(f"DROP TABLE {name}")
    for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DROP INDEX jobs_with_operator_request")  # v4, rebuilt by v6 on its column
    conn.execute("ALTER TABLE jobs DROP COLUMN has_operator_request")
    conn.execute("PRAGMA user_version = 2")
    conn.close()

    with StateStore.open(path) as store:
        assert store.schema_version() == len(MIGRATIONS)
        assert true_counts(path) == expected
        assert_summary_exact(store)
        store.insert_job(make_job("later", state=JobState.RUNNING, ns_per_day=2.0))
        assert_summary_exact(store)


@contextmanager
def counted(store: StateStore, conn: sqlite3.Connection) -> Iterator[dict[str, int]]:
    """Statements run and SQLite VM instructions executed (in steps of 100) while inside."""
    tally = {"statements": 0, "vm_steps": 0}

    def on_statement(sql: str) -> None:
        tally["statements"] += 1

    def on_progress() -> int:
        tally["vm_steps"] += 1
        return 0

    conn.set_trace_callback(on_statement)
    conn.set_progress_handler(on_progress, 100)
    try:
        yield tally
    finally:
        conn.set_trace_callback(None)
        conn.set_progress_handler(None, 0)


def _status_work(path: Path, n_jobs: int) -> dict[str, int]:
    with StateStore.open(path) as store, store.transaction():
        for i in range(n_jobs):
            state = (JobState.COMPLETED, JobState.QUEUED, JobState.RUNNING)[i % 3]
            rate = 100.0 if state is JobState.RUNNING else None
            store.insert_job(make_job(f"j{i:06d}", state=state, ns_per_day=rate))
            if i % 4 == 0:
                cluster = ("clusterA", "clusterB")[i % 2]
                store.insert_allocation(make_allocation(f"a{i:06d}", cluster=cluster))
        store.upsert_cluster_status(ClusterStatus(name="clusterA"))
    conn = sqlite3.connect(path, isolation_level=None)
    store = StateStore(conn, path)
    try:
        with counted(store, conn) as tally:
            summary = store.status_summary()
        assert summary.total_jobs == n_jobs
    finally:
        conn.close()
    return tally


def test_status_work_does_not_grow_with_the_number_of_jobs(tmp_path: Path) -> None:
    small = _status_work(tmp_path / "small.sqlite", 300)
    large = _status_work(tmp_path / "large.sqlite", 3000)
    assert small["statements"] == large["statements"]
    # Ten times the jobs, the same SQLite work: nothing reads a row per job.
    assert small["vm_steps"] == large["vm_steps"]


def _plans(path: Path, run: list[str]) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        return {
            sql: [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            for sql in run
            if sql.split(None, 1)[0].upper() in {"SELECT", "INSERT", "UPDATE", "DELETE"}
        }
    finally:
        conn.close()


def test_the_daemons_per_cycle_queries_never_scan_a_big_table(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with StateStore.open(path) as store, store.transaction():
        # A long-lived file: most jobs finished, most allocations ended.
        for i in range(400):
            live = i % 10 == 0
            store.insert_job(
                make_job(f"j{i:04d}", state=JobState.QUEUED if live else JobState.COMPLETED)
            )
            store.insert_allocation(
                make_allocation(
                    f"a{i:04d}", state=AllocationState.PENDING if live else AllocationState.ENDED
                )
            )
        store.insert_segment(make_segment("j0001", 1, allocation_id="a0001"))
    # ANALYZE as a long-lived file would have it, so the planner sees realistic sizes.
    sqlite3.connect(path).execute("ANALYZE").connection.close()

    conn = sqlite3.connect(path, isolation_level=None)
    store = StateStore(conn, path)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        store.list_jobs(states=JobState.active())
        store.list_allocations(cluster="clusterA", states=LIVE_STATES)
        store.list_allocations(states=LIVE_STATES)
        store.list_allocations(states=[AllocationState.RUNNING])
        job = store.get_job("j0001")
        allocation = store.get_allocation("a0001")
        assert job is not None and allocation is not None
        store.update_job(job.model_copy(update={"state": JobState.RUNNING}))
        store.update_allocation(allocation.model_copy(update={"state": AllocationState.RUNNING}))
        running = job.model_copy(update={"state": JobState.RUNNING, "epoch": 1})
        store.update_job_at_epoch(running, 0)  # the daemon's persist of a new epoch
        store.insert_segment(make_segment("j0001", 2, allocation_id="a0001"))
        store.close_segment("j0001", 1, SegmentOutcome.HANDOFF, 100)
        store.list_segments("j0001")
        store.add_event("assigned", "to a0001", job_id="j0001", allocation_id="a0001")
        store.list_events(job_id="j0001")
        store.upsert_cluster_status(ClusterStatus(name="clusterA"))
        store.get_cluster_status("clusterA")
        store.list_cluster_status()
        store.status_summary()
        store.count_jobs_by_state()
        store.find_job_by_prefix("j00", limit=2)
    finally:
        conn.set_trace_callback(None)
        conn.close()

    plans = _plans(path, statements)
    assert len(plans) >= 15
    scans = {
        sql: line
        for sql, lines in plans.items()
        for line in lines
        if line.startswith("SCAN ") and line.split()[1] in BIG_TABLES
    }
    assert scans == {}
