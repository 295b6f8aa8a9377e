"""The schema as numbered migrations; `PRAGMA user_version` records how many were applied.

Never edit a released migration: append a new script. Opening a file runs the missing ones in
one write transaction, so a crash mid-migration leaves the file at its old version.

Every table keeps the model's full JSON in `data` (the source of truth when reading) plus the
columns that queries filter, sort or aggregate on; `relaymd.state.queries` keeps both in step.
"""

from __future__ import annotations

import sqlite3

# v1: the relay itself.
_V1 = """
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    priority      INTEGER NOT NULL DEFAULT 0,
    epoch         INTEGER NOT NULL DEFAULT 0,
    allocation_id TEXT,
    ns_per_day    REAL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    data          TEXT NOT NULL
);
CREATE INDEX jobs_by_order ON jobs (priority DESC, created_at ASC, id ASC);
CREATE INDEX jobs_by_state_order ON jobs (state, priority DESC, created_at ASC, id ASC);

CREATE TABLE allocations (
    id           TEXT PRIMARY KEY,
    cluster      TEXT NOT NULL,
    state        TEXT NOT NULL,
    job_id       TEXT,
    submitted_at TEXT NOT NULL,
    data         TEXT NOT NULL
);
CREATE INDEX allocations_by_cluster_state ON allocations (cluster, state);
CREATE INDEX allocations_by_state ON allocations (state, submitted_at, id);

CREATE TABLE segments (
    id            INTEGER PRIMARY KEY,
    job_id        TEXT NOT NULL,
    epoch         INTEGER NOT NULL,
    allocation_id TEXT NOT NULL,
    cluster       TEXT NOT NULL,
    start_step    INTEGER NOT NULL,
    end_step      INTEGER,
    started_at    TEXT NOT NULL,
    ended_at      TEXT,
    outcome       TEXT NOT NULL,
    reason        TEXT,
    data          TEXT NOT NULL,
    UNIQUE (job_id, epoch)
);
CREATE INDEX segments_by_allocation ON segments (allocation_id);

CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    kind          TEXT NOT NULL,
    job_id        TEXT,
    allocation_id TEXT,
    cluster       TEXT,
    data          TEXT NOT NULL
);
CREATE INDEX events_by_job ON events (job_id, id);
"""

# v2: operator-facing status (per-cluster switch and reachability, the daemon's heartbeat)
# and a covering index so `relaymd status` aggregates jobs without touching the table.
_V2 = """
CREATE TABLE clusters (
    name         TEXT PRIMARY KEY,
    enabled      INTEGER NOT NULL DEFAULT 1,
    reachability TEXT NOT NULL,
    data         TEXT NOT NULL
);

CREATE TABLE daemon (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    data TEXT NOT NULL
);

CREATE INDEX jobs_by_state_rate ON jobs (state, ns_per_day);
"""

# v3: status counters. `relaymd status` read COUNT(*) over the jobs and allocations tables,
# a cost linear in everything ever submitted (164 ms at 1 000 000 jobs). Triggers keep one
# row per job state and per (cluster, allocation state) exact in the same transaction as
# every insert, update and delete, whichever code path makes it; the rate is summed in
# integer micro-ns/day so that adding and subtracting never drifts. Existing files are
# back-filled from the tables.
_V3_STATUS_COUNTERS = """
CREATE TABLE job_counts (
    state      TEXT PRIMARY KEY,
    n          INTEGER NOT NULL,
    rate_micro INTEGER NOT NULL
);
CREATE TABLE allocation_counts (
    cluster TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (cluster, state)
);

INSERT INTO job_counts (state, n, rate_micro)
    SELECT state, COUNT(*), COALESCE(SUM(CAST(round(ns_per_day * 1000000) AS INTEGER)), 0)
    FROM jobs GROUP BY state;
INSERT INTO allocation_counts (cluster, state, n)
    SELECT cluster, state, COUNT(*) FROM allocations GROUP BY cluster, state;

CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (state, n, rate_micro)
        VALUES (NEW.state, 1, COALESCE(CAST(round(NEW.ns_per_day * 1000000) AS INTEGER), 0))
        ON CONFLICT (state) DO UPDATE SET n = n + 1, rate_micro = rate_micro + excluded.rate_micro;
END;
CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1,
        rate_micro = rate_micro - COALESCE(CAST(round(OLD.ns_per_day * 1000000) AS INTEGER), 0)
        WHERE state = OLD.state;
END;
CREATE TRIGGER job_counts_update AFTER UPDATE OF state, ns_per_day ON jobs
    WHEN OLD.state IS NOT NEW.state OR OLD.ns_per_day IS NOT NEW.ns_per_day BEGIN
    UPDATE job_counts SET n = n - 1,
        rate_micro = rate_micro - COALESCE(CAST(round(OLD.ns_per_day * 1000000) AS INTEGER), 0)
        WHERE state = OLD.state;
    INSERT INTO job_counts (state, n, rate_micro)
        VALUES (NEW.state, 1, COALESCE(CAST(round(NEW.ns_per_day * 1000000) AS INTEGER), 0))
        ON CONFLICT (state) DO UPDATE SET n = n + 1, rate_micro = rate_micro + excluded.rate_micro;
END;

CREATE TRIGGER allocation_counts_insert AFTER INSERT ON allocations BEGIN
    INSERT INTO allocation_counts (cluster, state, n) VALUES (NEW.cluster, NEW.state, 1)
        ON CONFLICT (cluster, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER allocation_counts_delete AFTER DELETE ON allocations BEGIN
    UPDATE allocation_counts SET n = n - 1 WHERE cluster = OLD.cluster AND state = OLD.state;
END;
CREATE TRIGGER allocation_counts_update AFTER UPDATE OF cluster, state ON allocations
    WHEN OLD.cluster IS NOT NEW.cluster OR OLD.state IS NOT NEW.state BEGIN
    UPDATE allocation_counts SET n = n - 1 WHERE cluster = OLD.cluster AND state = OLD.state;
    INSERT INTO allocation_counts (cluster, state, n) VALUES (NEW.cluster, NEW.state, 1)
        ON CONFLICT (cluster, state) DO UPDATE SET n = n + 1;
END;
"""

# v4: the jobs that carry an operator request. The daemon's cycle loads only the jobs its
# facts touch plus the queue head (ADR 0021); a queued job with a request anywhere in the
# backlog must still be found without reading every row's JSON.
_V4_OPERATOR_REQUESTS = """
CREATE INDEX IF NOT EXISTS jobs_with_operator_request ON jobs (id)
    WHERE json_extract(data, '$.operator_request') IS NOT NULL;
"""

# v5: the (state, ns_per_day) index served the status sums that v3's counters replaced; nothing
# reads it, and every heartbeat's speed written moved an entry in it (about 40 % of the jobs
# UPDATE and half its COMMIT at 10 000 running jobs, docs/benchmarks.md).
_V5_NO_RATE_INDEX = """
DROP INDEX IF EXISTS jobs_by_state_rate;
"""

# v6: whether a job carries an operator request becomes a column of its own, and v4's partial
# index is rebuilt on it. The index condition is evaluated on the old and the new row of every
# UPDATE that sets `data`: with json_extract that parsed two copies of the job's JSON for each
# heartbeat's speed written (a third of the jobs UPDATE at 10 000 running jobs, ADR 0028).
_V6_OPERATOR_REQUEST_COLUMN = """
ALTER TABLE jobs ADD COLUMN has_operator_request INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET has_operator_request = 1
    WHERE json_extract(data, '$.operator_request') IS NOT NULL;
DROP INDEX IF EXISTS jobs_with_operator_request;
CREATE INDEX jobs_with_operator_request ON jobs (id) WHERE has_operator_request = 1;
"""

MIGRATIONS: tuple[str, ...] = (
    _V1,
    _V2,
    _V3_STATUS_COUNTERS,
    _V4_OPERATOR_REQUESTS,
    _V5_NO_RATE_INDEX,
    _V6_OPERATOR_REQUEST_COLUMN,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _is_blank(sql: str) -> bool:
    """Only whitespace, `--` comments and semicolons."""
    code = "".join(line.split("--", 1)[0] for line in sql.splitlines())
    return not code.strip(" \t;")


def split_script(script: str) -> list[str]:
    """Split a script into statements (executescript would COMMIT our open transaction)."""
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if not _is_blank(buffer):
                statements.append(buffer.strip())
            buffer = ""
    if not _is_blank(buffer):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buffer!r}")
    return statements
