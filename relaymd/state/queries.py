"""Every SQL statement of the state store and the mapping between rows and models.

Each public function is one store operation (see `relaymd.state.plan`): both front-ends call
it and execute what it yields, so the SQL and the row<->model mapping exist only here.
Rows are decoded from the `data` JSON column; the other columns are derived from the model on
every write by the `_*_row` functions, so they cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from relaymd.models import (
    Allocation,
    AllocationCount,
    AllocationState,
    AuditEvent,
    ClusterStatus,
    DaemonStatus,
    Job,
    JobState,
    Segment,
    SegmentOutcome,
    StatusSummary,
    utcnow,
)
from relaymd.state.errors import ConflictError, DuplicateError, NotFoundError, SchemaTooNewError
from relaymd.state.job_json import job_json
from relaymd.state.plan import (
    Access,
    Plan,
    Result,
    Statement,
    Steps,
    first_value,
    in_transaction,
    reads,
    writes,
)
from relaymd.state.schema import MIGRATIONS, SCHEMA_VERSION, split_script

# Long enough to ride out the daemon's biggest transaction and a WAL checkpoint.
BUSY_TIMEOUT_S = 30.0

_ONE_MICROSECOND = timedelta(microseconds=1)

M = TypeVar("M", bound=BaseModel)


# Equal instants give equal texts, and a row written again carries mostly the instants it
# had (created, started, the cycle's own `now` on thousands of rows): kept, a tenth the cost.
_UTC_TEXTS: dict[datetime, str] = {}
_UTC_TEXTS_KEPT = 65_536


def ts(value: datetime | None) -> str | None:
    """A fixed-width UTC text that sorts like the instant (pydantic's JSON form does not)."""
    if value is None:
        return None
    text = _UTC_TEXTS.get(value)
    if text is None:
        if len(_UTC_TEXTS) >= _UTC_TEXTS_KEPT:
            _UTC_TEXTS.clear()
        text = _UTC_TEXTS[value] = _utc_text(value)
    return text


def _utc_text(value: datetime) -> str:
    if value.tzinfo is None:  # the models only make aware datetimes; treat naive as UTC
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat, not strftime ("...T12:00:00.000000+00:00" less its offset, plus "Z"): a
    # third of the cost, and every job row written stamps three.
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _bumped(previous: datetime) -> datetime:
    """Now, but strictly after `previous`, so every update changes `updated_at`."""
    return max(utcnow(), _aware(previous) + _ONE_MICROSECOND)


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    names = ", ".join(columns)
    values = ", ".join(f":{c}" for c in columns)
    return f"INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT DO NOTHING"


def _update_sql(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    sets = ", ".join(f"{c} = :{c}" for c in columns if c not in key)
    where = " AND ".join(f"{c} = :{c}" for c in key)
    return f"UPDATE {table} SET {sets} WHERE {where}"


def _upsert_sql(table: str, columns: Sequence[str], key: str) -> str:
    names = ", ".join(columns)
    values = ", ".join(f":{c}" for c in columns)
    sets = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return (
        f"INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT ({key}) DO UPDATE SET {sets}"
    )


def _placeholders(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def _decoded(model: type[M], result: Result) -> list[M]:
    """The models stored in the first (`data`) column of each row."""
    if result.memo is not None:
        memo = result.memo
        return [memo.decode(model, row[0]) for row in result.rows]
    return [model.model_validate_json(row[0]) for row in result.rows]


def _remember(result: Result, written: Sequence[tuple[BaseModel, dict[str, Any]]]) -> None:
    """Rows a statement just wrote (model, row with its `data`), into the executor's memo."""
    if result.memo is not None:
        for value, row in written:
            result.memo.remember(value, row["data"])


def _update_in_two(
    sql: tuple[str, str], models: Sequence[BaseModel], rows: list[dict[str, Any]], slim: list[bool]
) -> Steps[bool]:
    """Batched UPDATEs: the rows marked `slim` by `sql[0]` (it sets fewer columns), the others
    by `sql[1]`; at most two statements however many rows. True, and the rows remembered as
    written, when every row was written."""
    written, memo = 0, None
    for statement, kind in ((sql[0], True), (sql[1], False)):
        batch = [row for row, marked in zip(rows, slim, strict=True) if marked is kind]
        if batch:
            result = yield Statement(statement, batch, many=True)
            written, memo = written + result.rowcount, result.memo
    if written != len(rows):
        return False
    _remember(Result(memo=memo), list(zip(models, rows, strict=True)))
    return True


def _first(model: type[M], result: Result) -> M | None:
    return _decoded(model, Result(result.rows[:1], memo=result.memo))[0] if result.rows else None


def _insert(sql: str, row: dict[str, Any], duplicate: str) -> Steps[None]:
    """Insert a row whose key must be new; DuplicateError(`duplicate`) when it is not."""
    result = yield Statement(sql, row)
    if result.rowcount == 0:
        raise DuplicateError(duplicate)


# --- schema and connection -------------------------------------------------------------------

CONNECTION_PRAGMAS = (
    f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}",
    # FULL: a committed epoch must survive a power cut, or two workers could share one.
    "PRAGMA synchronous = FULL",
    # Read through the OS page cache without copying: a fresh CLI process starts cold.
    "PRAGMA mmap_size = 268435456",
)


def _user_version() -> Steps[int]:
    result = yield Statement("PRAGMA user_version")
    return int(first_value(result) or 0)


def _needs_migration(found: int, path: Path | str) -> bool:
    if found > SCHEMA_VERSION:
        raise SchemaTooNewError(path, found, SCHEMA_VERSION)
    return found < SCHEMA_VERSION


def _setup(path: Path | str) -> Steps[int]:
    for pragma in CONNECTION_PRAGMAS:
        yield Statement(pragma)
    found = yield from _user_version()
    _needs_migration(found, path)  # refuse a newer file before changing anything in it
    yield Statement("PRAGMA journal_mode = WAL")
    if found < SCHEMA_VERSION:
        found = yield from in_transaction(Plan(Access.WRITE, _migrate(path)))
    return found


def _migrate(path: Path | str) -> Steps[int]:
    # Re-read under the write lock: another process may have migrated meanwhile.
    found = yield from _user_version()
    if _needs_migration(found, path):
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for sql in split_script(MIGRATIONS[version - 1]):
                yield Statement(sql)
            yield Statement(f"PRAGMA user_version = {version}")
    return found


def open_connection(path: Path | str) -> Plan[int]:
    """Configure a fresh connection and migrate the file; returns the version found."""
    return Plan(Access.RAW, _setup(path))


@reads
def schema_version() -> Steps[int]:
    return (yield from _user_version())


# --- jobs ------------------------------------------------------------------------------------

_JOB_COLUMNS = (
    "id",
    "state",
    "priority",
    "epoch",
    "allocation_id",
    "ns_per_day",
    "created_at",
    "updated_at",
    "has_operator_request",
    "data",
)
_INSERT_JOB = _insert_sql("jobs", _JOB_COLUMNS)
_UPDATE_JOB = _update_sql("jobs", _JOB_COLUMNS, ("id",))
_JOB_ORDER = "ORDER BY priority DESC, created_at ASC, id ASC"
_AS_READ = " AND epoch = :read_epoch AND updated_at = :read_updated_at"
_UPDATE_JOB_AS_READ = _UPDATE_JOB + _AS_READ
# A row whose state, priority, epoch, binding, creation and operator request are as read (a
# heartbeat's speed and steps): SQLite then leaves the indexes on those columns alone (about
# a quarter of the statement's cost); the columns it leaves out are, by the compare-and-set,
# the ones read (`_job_keys`).
_UPDATE_JOB_DATA_AS_READ = (
    "UPDATE jobs SET ns_per_day = :ns_per_day, updated_at = :updated_at, data = :data"
    " WHERE id = :id" + _AS_READ
)


def _job_row(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": job.state.value,
        "priority": job.spec.priority,
        "epoch": job.epoch,
        "allocation_id": job.allocation_id,
        "ns_per_day": job.ns_per_day,
        "created_at": ts(job.created_at),
        "updated_at": ts(job.updated_at),
        "has_operator_request": int(job.operator_request is not None),
        "data": job_json(job),
    }


def _load_job(job_id: str) -> Steps[Job]:
    job = yield from get_job(job_id).steps
    if job is None:
        raise NotFoundError(f"no job {job_id} in the state database")
    return job


@writes
def insert_job(job: Job) -> Steps[None]:
    duplicate = f"job {job.id} already exists in the state database"
    yield from _insert(_INSERT_JOB, _job_row(job), duplicate)


@reads
def get_job(job_id: str) -> Steps[Job | None]:
    result = yield Statement("SELECT data FROM jobs WHERE id = ?", (job_id,))
    return _first(Job, result)


@reads
def list_jobs(
    states: Sequence[JobState] | None = None, limit: int | None = None, offset: int = 0
) -> Steps[list[Job]]:
    params: list[Any] = []
    where = ""
    if states is not None:
        if not states:
            return []
        # Pinned (see _BY_STATE_INDEXES): the daemon asks for the few active jobs every cycle.
        where = f"INDEXED BY jobs_by_state_order WHERE state IN ({_placeholders(states)})"
        params.extend(JobState(s).value for s in states)
    params.extend((-1 if limit is None else limit, offset))
    # Sort and page on the covering index first, then fetch only the page's JSON: sorting
    # the JSON of every matching row would cost milliseconds per thousand jobs.
    result = yield Statement(
        "SELECT jobs.data FROM (SELECT id, priority, created_at FROM jobs "
        f"{where} {_JOB_ORDER} LIMIT ? OFFSET ?) AS page JOIN jobs ON jobs.id = page.id "
        "ORDER BY page.priority DESC, page.created_at ASC, page.id ASC",
        params,
    )
    return _decoded(Job, result)


@reads
def get_jobs(job_ids: Sequence[str]) -> Steps[dict[str, Job]]:
    """The jobs with these ids that exist, by id: one statement however many (the ids go
    as one JSON array, so no limit on a statement's variables applies)."""
    wanted = list(dict.fromkeys(job_ids))
    if not wanted:
        return {}
    return {job.id: job for job in (yield from rows_by_id(Job, "jobs", wanted))}


def rows_by_id(model: type[M], table: str, ids: Sequence[str]) -> Steps[list[M]]:
    """The rows of `table` with these ids that exist, in one statement."""
    result = yield Statement(
        f"SELECT data FROM {table} WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(ids)),),
    )
    return _decoded(model, result)


@reads
def jobs_with_operator_request() -> Steps[list[Job]]:
    """Jobs whose row carries an operator request (the partial index of schema v6)."""
    result = yield Statement(
        "SELECT data FROM jobs INDEXED BY jobs_with_operator_request"
        " WHERE has_operator_request = 1 ORDER BY id"
    )
    return _decoded(Job, result)


@writes
def update_job(job: Job, *, expected_updated_at: datetime | None = None) -> Steps[Job]:
    """Replace the row; returns what was stored.

    The epoch never goes backwards (a caller holding an older copy cannot undo an epoch that
    `update_job_at_epoch` moved), and `updated_at` always advances. With
    `expected_updated_at`, the update is a compare-and-set: ConflictError if the row changed
    since that copy was read.
    """
    current = yield from _load_job(job.id)
    if expected_updated_at is not None and _aware(current.updated_at) != _aware(
        expected_updated_at
    ):
        raise ConflictError(
            f"job {job.id} changed since it was read (updated at {current.updated_at})"
        )
    stored = job.model_copy(
        update={"epoch": max(current.epoch, job.epoch), "updated_at": _bumped(current.updated_at)}
    )
    yield Statement(_UPDATE_JOB, _job_row(stored))
    return stored


@writes
def update_job_at_epoch(job: Job, expected_epoch: int) -> Steps[Job]:
    """Replace the row only while its epoch is still `expected_epoch`: the fencing token's
    compare-and-set. The epoch is stored as the caller decided it (the decision is the one
    source of epochs); ConflictError, and nothing written, if another writer moved it."""
    if job.epoch < expected_epoch:
        raise ValueError(f"job {job.id}: epoch {job.epoch} is lower than {expected_epoch}")
    current = yield from _load_job(job.id)
    stored = job.model_copy(update={"updated_at": _bumped(current.updated_at)})
    result = yield Statement(
        _UPDATE_JOB + " AND epoch = :expected_epoch",
        {**_job_row(stored), "expected_epoch": expected_epoch},
    )
    if result.rowcount != 1:
        raise ConflictError(
            f"job {job.id} is at epoch {current.epoch}, not {expected_epoch}: another writer"
            " moved its fencing token since this decision read it"
        )
    return stored


@writes
def update_job_as_read(job: Job, read: Job) -> Steps[Job]:
    """Replace the row only while it is still the copy `read` (same epoch and `updated_at`):
    the fencing compare-and-set of `update_job_at_epoch` in one statement, without reading
    the row back. ConflictError, and nothing written, if anyone wrote it since."""
    if job.epoch < read.epoch:
        raise ValueError(f"job {job.id}: epoch {job.epoch} is lower than {read.epoch}")
    stored = job.model_copy(update={"updated_at": _bumped(read.updated_at)})
    result = yield Statement(
        _UPDATE_JOB_AS_READ,
        {**_job_row(stored), "read_epoch": read.epoch, "read_updated_at": ts(read.updated_at)},
    )
    if result.rowcount != 1:
        current = yield from _load_job(job.id)
        raise ConflictError(
            f"job {job.id} is at epoch {current.epoch} (updated at {current.updated_at}), not"
            f" epoch {read.epoch} as read: another writer changed it since this decision read it"
        )
    return stored


def update_jobs_as_read(changes: Sequence[tuple[Job, Job]]) -> Plan[list[Job]]:
    """`update_job_as_read` for many (job, read copy) pairs in one statement; ConflictError,
    naming the first job another writer changed, and nothing written, if any was.

    The rows are stamped and serialized when the plan is made, so a caller that makes it
    before its transaction holds SQLite's write lock only for the statement (ADR 0021)."""
    stored = []
    for job, read in changes:
        if job.epoch < read.epoch:
            raise ValueError(f"job {job.id}: epoch {job.epoch} is lower than {read.epoch}")
        stored.append(_stamped(job, read.updated_at))
    rows = [
        {**_job_row(new), "read_epoch": read.epoch, "read_updated_at": ts(read.updated_at)}
        for new, (_, read) in zip(stored, changes, strict=True)
    ]
    keys_as_read = [
        _job_keys(new) == _job_keys(read) for new, (_, read) in zip(stored, changes, strict=True)
    ]
    return Plan(Access.WRITE, _update_job_rows(stored, rows, keys_as_read))


def _job_keys(job: Job) -> tuple[Any, ...]:
    """The values of the job's indexed columns: the state, priority, epoch, binding, creation,
    and whether it carries an operator request."""
    return (
        job.state,
        job.spec.priority,
        job.epoch,
        job.allocation_id,
        job.created_at,
        job.operator_request is not None,
    )


def _stamped(job: Job, read_updated_at: datetime) -> Job:
    """`job` with an `updated_at` strictly after the copy it replaces; a job whose decision
    already stamped one (the cycle's `put_job`) is kept as it is, not copied again."""
    if _aware(job.updated_at) > _aware(read_updated_at):
        return job
    return job.model_copy(update={"updated_at": _bumped(read_updated_at)})


def _update_job_rows(
    stored: list[Job], rows: list[dict[str, Any]], keys_as_read: list[bool]
) -> Steps[list[Job]]:
    if not stored:
        return []
    sql = (_UPDATE_JOB_DATA_AS_READ, _UPDATE_JOB_AS_READ)
    if not (yield from _update_in_two(sql, stored, rows, keys_as_read)):
        for new in stored:  # the rare path: name a row this statement did not write
            current = yield from _load_job(new.id)
            if _aware(current.updated_at) != _aware(new.updated_at):
                raise ConflictError(
                    f"job {new.id} is at epoch {current.epoch} (updated at"
                    f" {current.updated_at}): another writer changed it since this decision"
                    " read it"
                )
    return stored


# Maintained by triggers (schema v3): a handful of rows whatever the number of jobs.
_JOB_COUNTS = "SELECT state, n, rate_micro FROM job_counts"
_ALLOCATION_COUNTS = (
    "SELECT cluster, state, n FROM allocation_counts WHERE n > 0 ORDER BY cluster, state"
)
_MICRO = 1_000_000


@reads
def count_jobs_by_state() -> Steps[dict[JobState, int]]:
    result = yield Statement(_JOB_COUNTS)
    return _state_counts(result.rows)


def _state_counts(rows: Sequence[Sequence[Any]]) -> dict[JobState, int]:
    counts = dict.fromkeys(JobState, 0)
    for state, count, *_ in rows:
        counts[JobState(state)] = int(count)
    return counts


@reads
def find_job_by_prefix(prefix: str, limit: int | None = None) -> Steps[list[Job]]:
    """Jobs whose id starts with `prefix`, by id; `limit=2` is enough to detect ambiguity."""
    if not prefix:
        raise ValueError("a job id prefix must not be empty")
    # A range on the primary key (LIKE would scan the table and treat _ and % specially).
    result = yield Statement(
        "SELECT data FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?",
        (prefix, prefix + "\U0010ffff", -1 if limit is None else limit),
    )
    return _decoded(Job, result)


# _BY_STATE_INDEXES: queries by state name their index. Once a file has statistics
# (ANALYZE, `PRAGMA optimize`), SQLite estimates rows per state as the table size divided by
# the handful of distinct states, so an IN over three live states looks like most of the
# table and it would scan a million rows for the few hundred that are live.

# --- allocations -----------------------------------------------------------------------------

_ALLOCATION_COLUMNS = ("id", "cluster", "state", "job_id", "submitted_at", "data")
_INSERT_ALLOCATION = _insert_sql("allocations", _ALLOCATION_COLUMNS)
_UPDATE_ALLOCATION = _update_sql("allocations", _ALLOCATION_COLUMNS, ("id",))
# An allocation whose cluster, state, binding and submission are as read: its indexes and
# the status counters' trigger are left alone (the one writer of a row is its cluster's runner).
_UPDATE_ALLOCATION_DATA = "UPDATE allocations SET data = :data WHERE id = :id"


def _allocation_row(allocation: Allocation) -> dict[str, Any]:
    return {
        "id": allocation.id,
        "cluster": allocation.cluster,
        "state": allocation.state.value,
        "job_id": allocation.job_id,
        "submitted_at": ts(allocation.submitted_at),
        "data": allocation.model_dump_json(),
    }


@writes
def insert_allocation(allocation: Allocation) -> Steps[None]:
    duplicate = f"allocation {allocation.id} already exists in the state database"
    yield from _insert(_INSERT_ALLOCATION, _allocation_row(allocation), duplicate)


@reads
def get_allocation(allocation_id: str) -> Steps[Allocation | None]:
    result = yield Statement("SELECT data FROM allocations WHERE id = ?", (allocation_id,))
    return _first(Allocation, result)


@reads
def list_allocations(
    cluster: str | None = None,
    states: Sequence[AllocationState] | None = None,
    *,
    unbound: bool = False,
) -> Steps[list[Allocation]]:
    """By cluster and state; with `unbound`, only rows no job is bound to (the filter runs
    on the `job_id` column, so bound rows are never decoded)."""
    clauses: list[str] = []
    params: list[Any] = []
    if unbound:
        clauses.append("job_id IS NULL")
    if cluster is not None:
        clauses.append("cluster = ?")
        params.append(cluster)
    if states is not None:
        if not states:
            return []
        clauses.append(f"state IN ({_placeholders(states)})")
        params.extend(AllocationState(s).value for s in states)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    if cluster is not None:
        where = f"INDEXED BY allocations_by_cluster_state {where}"
    elif states is not None:
        where = f"INDEXED BY allocations_by_state {where}"
    result = yield Statement(
        f"SELECT data FROM allocations {where} ORDER BY submitted_at, id", params
    )
    return _decoded(Allocation, result)


@writes
def update_allocation(allocation: Allocation) -> Steps[None]:
    result = yield Statement(_UPDATE_ALLOCATION, _allocation_row(allocation))
    if result.rowcount == 0:
        raise NotFoundError(f"no allocation {allocation.id} in the state database")


def update_allocations(
    allocations: Sequence[Allocation], read: Mapping[str, Allocation] | None = None
) -> Plan[None]:
    """`update_allocation` for many rows in one statement; NotFoundError if any is missing.
    Serialized when the plan is made (see `update_jobs_as_read`). With `read`, the copies the
    caller read (it is the rows' one writer), a row whose indexed columns are unchanged is
    written by a second statement that sets only its data."""
    rows = [_allocation_row(a) for a in allocations]
    read = read or {}
    same = [
        a.id in read and _allocation_keys(a) == _allocation_keys(read[a.id]) for a in allocations
    ]
    return Plan(Access.WRITE, _update_allocation_rows(list(allocations), rows, same))


def _allocation_keys(allocation: Allocation) -> tuple[Any, ...]:
    """The values of the allocation's indexed and counted columns."""
    return (allocation.cluster, allocation.state, allocation.job_id, allocation.submitted_at)


def _update_allocation_rows(
    allocations: list[Allocation], rows: list[dict[str, Any]], data_only: list[bool]
) -> Steps[None]:
    if not allocations:
        return
    sql = (_UPDATE_ALLOCATION_DATA, _UPDATE_ALLOCATION)
    if not (yield from _update_in_two(sql, allocations, rows, data_only)):
        for allocation in allocations:  # the rare path: say which one is missing
            if (yield from get_allocation(allocation.id).steps) is None:
                raise NotFoundError(f"no allocation {allocation.id} in the state database")


# --- segments --------------------------------------------------------------------------------

_SEGMENT_COLUMNS = (
    "job_id",
    "epoch",
    "allocation_id",
    "cluster",
    "start_step",
    "end_step",
    "started_at",
    "ended_at",
    "outcome",
    "reason",
    "data",
)
_INSERT_SEGMENT = _insert_sql("segments", _SEGMENT_COLUMNS)
_UPDATE_SEGMENT = _update_sql("segments", _SEGMENT_COLUMNS, ("job_id", "epoch"))


def _segment_row(segment: Segment) -> dict[str, Any]:
    return {
        "job_id": segment.job_id,
        "epoch": segment.epoch,
        "allocation_id": segment.allocation_id,
        "cluster": segment.cluster,
        "start_step": segment.start_step,
        "end_step": segment.end_step,
        "started_at": ts(segment.started_at),
        "ended_at": ts(segment.ended_at),
        "outcome": segment.outcome.value,
        "reason": segment.reason,
        "data": segment.model_dump_json(),
    }


@writes
def insert_segment(segment: Segment) -> Steps[None]:
    duplicate = f"job {segment.job_id} already has a segment for epoch {segment.epoch}"
    yield from _insert(_INSERT_SEGMENT, _segment_row(segment), duplicate)


def _load_segment(job_id: str, epoch: int) -> Steps[Segment]:
    result = yield Statement(
        "SELECT data FROM segments WHERE job_id = ? AND epoch = ?", (job_id, epoch)
    )
    segment = _first(Segment, result)
    if segment is None:
        raise NotFoundError(f"job {job_id} has no segment for epoch {epoch}")
    return segment


@writes
def close_segment(
    job_id: str,
    epoch: int,
    outcome: SegmentOutcome,
    end_step: int | None,
    reason: str | None = None,
) -> Steps[Segment]:
    """Record how a segment ended. Closing again (a later, better classification) overwrites
    the outcome and reason but keeps the first `ended_at`, and a None `end_step` keeps the
    stored one."""
    segment = yield from _load_segment(job_id, epoch)
    closed = segment.model_copy(
        update={
            "outcome": SegmentOutcome(outcome),
            "end_step": segment.end_step if end_step is None else end_step,
            "reason": reason,
            "ended_at": segment.ended_at or utcnow(),
        }
    )
    yield Statement(_UPDATE_SEGMENT, _segment_row(closed))
    return closed


def clamp_time(value: datetime, earliest: datetime, latest: datetime) -> datetime:
    return max(earliest, min(latest, value)) if earliest <= latest else latest


class SegmentTimesUpdate(BaseModel):
    """The worker's times for one segment, as `record_segment_times` takes them."""

    job_id: str
    epoch: int
    noticed_at: datetime
    worker_started_at: datetime | None = None
    worker_ended_at: datetime | None = None


def _with_times(segment: Segment, times: SegmentTimesUpdate) -> Segment:
    update: dict[str, Any] = {}
    if times.worker_started_at is not None:
        update["worker_started_at"] = clamp_time(
            times.worker_started_at, segment.started_at, times.noticed_at
        )
    if times.worker_ended_at is not None:
        earliest = update.get("worker_started_at") or segment.worker_started_at
        update["worker_ended_at"] = clamp_time(
            times.worker_ended_at, earliest or segment.started_at, times.noticed_at
        )
    return segment.model_copy(update=update)


@writes
def record_segment_times(
    job_id: str,
    epoch: int,
    noticed_at: datetime,
    worker_started_at: datetime | None = None,
    worker_ended_at: datetime | None = None,
) -> Steps[Segment]:
    """Put the worker's event times on a segment, on the daemon's clock: never before the
    segment was assigned nor after the cycle that read the event."""
    segment = yield from _load_segment(job_id, epoch)
    recorded = _with_times(
        segment,
        SegmentTimesUpdate(
            job_id=job_id,
            epoch=epoch,
            noticed_at=noticed_at,
            worker_started_at=worker_started_at,
            worker_ended_at=worker_ended_at,
        ),
    )
    yield Statement(_UPDATE_SEGMENT, _segment_row(recorded))
    return recorded


@writes
def record_many_segment_times(updates: Sequence[SegmentTimesUpdate]) -> Steps[list[Segment]]:
    """`record_segment_times` for many segments: one read and one batched write however
    many; a segment with no row is skipped (a job bound before segments were recorded)."""
    if not updates:
        return []
    pairs = sorted({(u.job_id, u.epoch) for u in updates})
    # The pairs as one JSON array (no limit on a statement's variables applies), matched on
    # the UNIQUE (job_id, epoch) index.
    result = yield Statement(
        "SELECT data FROM segments WHERE (job_id, epoch) IN"
        " (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))",
        (json.dumps(pairs),),
    )
    found = {(s.job_id, s.epoch): s for s in _decoded(Segment, result)}
    for times in updates:  # in order: a later update of one segment builds on the earlier
        key = (times.job_id, times.epoch)
        if key in found:
            found[key] = _with_times(found[key], times)
    recorded = list(found.values())
    if recorded:
        yield Statement(_UPDATE_SEGMENT, [_segment_row(s) for s in recorded], many=True)
    return recorded


@reads
def list_segments(job_id: str) -> Steps[list[Segment]]:
    result = yield Statement(
        "SELECT data FROM segments WHERE job_id = ? ORDER BY epoch, id", (job_id,)
    )
    return _decoded(Segment, result)


@reads
def list_segments_on(allocation_ids: Sequence[str] | None = None) -> Steps[list[Segment]]:
    """Segments run on these allocations (every segment when None), oldest first."""
    if allocation_ids is None:
        result = yield Statement("SELECT data FROM segments ORDER BY started_at, id")
    else:
        marks = ",".join("?" * len(allocation_ids))
        result = yield Statement(
            f"SELECT data FROM segments WHERE allocation_id IN ({marks}) ORDER BY started_at, id",
            tuple(allocation_ids),
        )
    return _decoded(Segment, result)


# --- audit events ----------------------------------------------------------------------------

_INSERT_EVENT = (
    "INSERT INTO events (at, kind, job_id, allocation_id, cluster, data) "
    "VALUES (:at, :kind, :job_id, :allocation_id, :cluster, :data)"
)


def _event_from_row(row: Sequence[Any]) -> AuditEvent:
    event = AuditEvent.model_validate_json(row[1])
    return event.model_copy(update={"id": int(row[0])})


@writes
def add_event(
    kind: str,
    message: str,
    *,
    job_id: str | None = None,
    allocation_id: str | None = None,
    cluster: str | None = None,
) -> Steps[AuditEvent]:
    event = AuditEvent(
        kind=kind, message=message, job_id=job_id, allocation_id=allocation_id, cluster=cluster
    )
    result = yield Statement(_INSERT_EVENT, _event_row(event))
    return event.model_copy(update={"id": result.lastrowid})


def _event_row(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": ts(event.at),
        "kind": event.kind,
        "job_id": event.job_id,
        "allocation_id": event.allocation_id,
        "cluster": event.cluster,
        "data": event.model_dump_json(exclude={"id"}),
    }


def add_events(events: Sequence[AuditEvent]) -> Plan[None]:
    """Many audit rows in one statement, serialized when the plan is made (so outside the
    caller's write lock when it makes the plan first)."""
    rows = [_event_row(event) for event in events]
    return Plan(Access.WRITE, _insert_event_rows(rows))


def _insert_event_rows(rows: list[dict[str, Any]]) -> Steps[None]:
    if rows:
        yield Statement(_INSERT_EVENT, rows, many=True)


@reads
def list_events(job_id: str | None = None, limit: int = 50) -> Steps[list[AuditEvent]]:
    """The newest `limit` events (of one job, or all), oldest first like a log tail."""
    where, params = ("WHERE job_id = ?", [job_id]) if job_id is not None else ("", [])
    result = yield Statement(
        f"SELECT id, data FROM (SELECT id, data FROM events {where} ORDER BY id DESC LIMIT ?) "
        "ORDER BY id ASC",
        [*params, limit],
    )
    return [_event_from_row(row) for row in result.rows]


# --- clusters --------------------------------------------------------------------------------

_CLUSTER_COLUMNS = ("name", "enabled", "reachability", "data")
_UPSERT_CLUSTER = _upsert_sql("clusters", _CLUSTER_COLUMNS, "name")


def _cluster_row(status: ClusterStatus) -> dict[str, Any]:
    return {
        "name": status.name,
        "enabled": int(status.enabled),
        "reachability": status.reachability.value,
        "data": status.model_dump_json(),
    }


def _load_cluster(name: str) -> Steps[ClusterStatus | None]:
    result = yield Statement("SELECT data FROM clusters WHERE name = ?", (name,))
    return _first(ClusterStatus, result)


@writes
def upsert_cluster_status(status: ClusterStatus) -> Steps[ClusterStatus]:
    """Store the daemon's view of a cluster. `enabled` belongs to the operator: an existing
    row keeps its flag (change it with `set_cluster_enabled`); a new row takes the given one."""
    current = yield from _load_cluster(status.name)
    stored = status if current is None else status.model_copy(update={"enabled": current.enabled})
    yield Statement(_UPSERT_CLUSTER, _cluster_row(stored))
    return stored


@reads
def get_cluster_status(name: str) -> Steps[ClusterStatus | None]:
    return (yield from _load_cluster(name))


@reads
def list_cluster_status() -> Steps[list[ClusterStatus]]:
    result = yield Statement("SELECT data FROM clusters ORDER BY name")
    return _decoded(ClusterStatus, result)


@writes
def set_cluster_enabled(name: str, enabled: bool) -> Steps[ClusterStatus]:
    current = yield from _load_cluster(name)
    stored = (current or ClusterStatus(name=name)).model_copy(update={"enabled": enabled})
    yield Statement(_UPSERT_CLUSTER, _cluster_row(stored))
    return stored


# --- daemon ----------------------------------------------------------------------------------

_UPSERT_DAEMON = _upsert_sql("daemon", ("id", "data"), "id")


@writes
def set_daemon_status(status: DaemonStatus) -> Steps[None]:
    yield Statement(_UPSERT_DAEMON, {"id": 1, "data": status.model_dump_json()})


def _load_daemon() -> Steps[DaemonStatus | None]:
    result = yield Statement("SELECT data FROM daemon WHERE id = 1")
    return _first(DaemonStatus, result)


@reads
def get_daemon_status() -> Steps[DaemonStatus | None]:
    return (yield from _load_daemon())


# --- relaymd status --------------------------------------------------------------------------


@reads
def status_summary() -> Steps[StatusSummary]:
    """The trigger-maintained counters, in one snapshot: the same few statements and rows
    whatever the number of jobs and allocations."""
    jobs = yield Statement(_JOB_COUNTS)
    allocations = yield Statement(_ALLOCATION_COUNTS)
    clusters = yield from list_cluster_status().steps
    daemon = yield from _load_daemon()
    counts = _state_counts(jobs.rows)
    rate = sum(int(r[2]) for r in jobs.rows if r[0] == JobState.RUNNING.value) / _MICRO
    return StatusSummary(
        jobs=counts,
        total_jobs=sum(counts.values()),
        running_jobs=counts[JobState.RUNNING],
        running_ns_per_day=rate,
        allocations=[
            AllocationCount(cluster=c, state=AllocationState(s), count=n)
            for c, s, n in allocations.rows
        ],
        clusters=clusters,
        daemon=daemon,
    )
