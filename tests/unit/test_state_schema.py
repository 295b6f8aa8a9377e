"""Opening the state file: migrations, refusing newer files, permissions, connection setup."""

from __future__ import annotations

import inspect
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relaymd import paths
from relaymd.models import JobState
from relaymd.models.job import OperatorRequest
from relaymd.state import SCHEMA_VERSION, AsyncStateStore, SchemaTooNewError, StateStore, queries
from relaymd.state.schema import MIGRATIONS, split_script
from tests.unit.test_state_helpers import T0, make_job


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    conn.close()
    return {r[0] for r in rows}


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_default_path_is_the_xdg_state_db() -> None:
    with StateStore.open() as store:
        assert store.path == paths.state_db()
    assert paths.state_db().exists()


def test_an_empty_file_is_migrated_to_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    path.touch()
    with StateStore.open(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
    assert user_version(path) == SCHEMA_VERSION
    assert {"jobs", "allocations", "segments", "events", "clusters", "daemon"} <= tables(path)


def _old_file(path: Path, version: int) -> None:
    """A file as an older RelayMD left it: its migrations only, with a job row in it."""
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:version]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {version}")
    job = make_job("jold", state=JobState.RUNNING, ns_per_day=3.0)
    conn.execute(
        "INSERT INTO jobs (id, state, priority, epoch, allocation_id, ns_per_day, created_at,"
        " updated_at, data) VALUES (?, ?, 0, 4, NULL, 3.0, ?, ?, ?)",
        (
            job.id,
            job.state.value,
            "2026-01-01T12:00:00.000000Z",
            "2026-01-01T12:00:00.000000Z",
            job.model_copy(update={"epoch": 4}).model_dump_json(),
        ),
    )
    conn.close()


def test_a_file_of_the_previous_version_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    _old_file(path, SCHEMA_VERSION - 1)
    with StateStore.open(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        job = store.get_job("jold")
        assert job is not None
        assert (job.epoch, job.created_at) == (4, T0)
        # The tables and indexes added since work on the migrated file.
        assert store.set_cluster_enabled("clusterA", False).enabled is False
        summary = store.status_summary()
        assert (summary.running_jobs, summary.running_ns_per_day) == (1, 3.0)
    # Reopening an up-to-date file changes nothing.
    with StateStore.open(path) as store:
        assert store.get_job("jold") == job


def test_the_unused_rate_index_is_dropped_and_the_counters_keep_the_rate(tmp_path: Path) -> None:
    """v5: a v4 file loses `jobs_by_state_rate` (the counters of v3 replaced what it served);
    `status`'s running rate still follows a job's speed."""
    path = tmp_path / "state.sqlite"
    _old_file(path, 4)
    with StateStore.open(path) as store:
        job = store.get_job("jold")
        assert job is not None
        store.update_job(job.model_copy(update={"ns_per_day": 5.5}))
        assert store.status_summary().running_ns_per_day == 5.5
    conn = sqlite3.connect(path)
    try:
        indexes = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    finally:
        conn.close()
    assert "jobs_by_state_rate" not in indexes
    assert {"jobs_by_state_order", "jobs_with_operator_request"} <= indexes


def test_the_operator_request_flag_is_a_column_and_its_index_reads_no_json(
    tmp_path: Path,
) -> None:
    """v6: a v5 file's job carrying an operator request is flagged in the new column and still
    found through the partial index, which no longer calls json_extract; writes keep the flag
    in step with the row's JSON both ways."""
    path = tmp_path / "state.sqlite"
    _old_file(path, 5)
    conn = sqlite3.connect(path, isolation_level=None)
    data = json.loads(conn.execute("SELECT data FROM jobs WHERE id = 'jold'").fetchone()[0])
    data["operator_request"] = OperatorRequest.CANCEL.value
    conn.execute("UPDATE jobs SET data = ? WHERE id = 'jold'", (json.dumps(data),))
    conn.close()
    with StateStore.open(path) as store:
        assert [j.id for j in store.jobs_with_operator_request()] == ["jold"]
        job = store.get_job("jold")
        assert job is not None
        store.update_job(job.model_copy(update={"operator_request": None}))
        assert store.jobs_with_operator_request() == []
        store.insert_job(
            make_job("jnew").model_copy(update={"operator_request": OperatorRequest.REQUEUE})
        )
        assert [j.id for j in store.jobs_with_operator_request()] == ["jnew"]
    conn = sqlite3.connect(path)
    try:
        flags = dict(conn.execute("SELECT id, has_operator_request FROM jobs"))
        (index_sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'jobs_with_operator_request'"
        ).fetchone()
    finally:
        conn.close()
    assert flags == {"jold": 0, "jnew": 1}
    assert "json_extract" not in index_sql


async def test_the_async_front_end_migrates_too(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    _old_file(path, SCHEMA_VERSION - 1)
    async with await AsyncStateStore.open(path) as store:
        assert await store.schema_version() == SCHEMA_VERSION
        assert (await store.count_jobs_by_state())[JobState.RUNNING] == 1


def _newer_file(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()


def test_a_file_from_a_newer_relaymd_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    _newer_file(path)
    with pytest.raises(SchemaTooNewError) as caught:
        StateStore.open(path)
    message = str(caught.value)
    assert str(path) in message
    assert "upgrade RelayMD" in message
    assert f"version {SCHEMA_VERSION + 1}" in message
    assert user_version(path) == SCHEMA_VERSION + 1
    assert tables(path) == {"future"}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    conn.close()


async def test_the_async_front_end_refuses_a_newer_file(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    _newer_file(path)
    with pytest.raises(SchemaTooNewError):
        await AsyncStateStore.open(path)


@pytest.mark.usefixtures("loose_umask")
def test_created_directory_is_0700_and_file_0600_despite_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state" / "state.sqlite"
    with StateStore.open(path) as store:
        store.insert_job(make_job("j1"))
        wal = Path(f"{path}-wal")
        assert wal.exists()
        assert mode(wal) == 0o600
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(path.parent.parent) == 0o700


@pytest.mark.usefixtures("loose_umask")
async def test_async_open_applies_the_same_modes(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.sqlite"
    async with await AsyncStateStore.open(path):
        pass
    assert (mode(path), mode(path.parent)) == (0o600, 0o700)


def test_an_existing_loose_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    path.touch()
    path.chmod(0o644)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with StateStore.open(path):
        pass
    assert mode(path) == 0o600
    # A folder the user pointed us into is theirs: only our own default dir is tightened.
    with StateStore.open(shared / "state.sqlite"):
        pass
    assert mode(shared) == 0o755
    paths.state_dir().mkdir(parents=True, exist_ok=True)
    paths.state_dir().chmod(0o755)
    with StateStore.open():
        pass
    assert mode(paths.state_dir()) == 0o700


def test_connection_uses_wal_and_a_long_busy_timeout(tmp_path: Path) -> None:
    with StateStore.open(tmp_path / "state.sqlite") as store:
        conn = store._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 30_000


def test_split_script_keeps_statements_with_inner_semicolons() -> None:
    script = """
    CREATE TABLE t (x TEXT DEFAULT 'a;b');
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 'c'; SELECT 1; END;
    -- trailing comment
    """
    statements = split_script(script)
    assert len(statements) == 2
    assert statements[0].endswith("'a;b');")
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    for script in MIGRATIONS:  # every released migration splits cleanly
        assert split_script(script)


async def test_both_front_ends_offer_the_same_methods_and_arguments(tmp_path: Path) -> None:
    def public(store: object) -> dict[str, list[tuple[str, Any, Any]]]:
        found = {}
        for name in dir(store):
            member = getattr(store, name)
            if name.startswith("_") or not callable(member):
                continue
            params = inspect.signature(member).parameters.values()
            found[name] = [(p.name, p.kind, p.default) for p in params]
        return found

    path = tmp_path / "state.sqlite"
    with StateStore.open(path) as sync_store:
        sync_api = public(sync_store)
    async with await AsyncStateStore.open(path) as async_store:
        async_api = public(async_store)
        assert sync_api == async_api
        assert {"insert_job", "status_summary", "transaction", "update_job_at_epoch"} <= set(
            sync_api
        )
        for name in sync_api.keys() - {"open", "transaction", "snapshot", "bind"}:
            assert inspect.iscoroutinefunction(getattr(async_store, name)), name
    # Every operation written in queries is a method of both (the table lists them all).
    operations = {name for name, fn in vars(queries).items() if hasattr(fn, "__wrapped__")}
    assert operations <= set(sync_api), operations - set(sync_api)
