"""--json on actions, and one timestamp form (ISO 8601, UTC, +00:00) in every --json output."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.cli_env import CliEnv, make_job_dir

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
# Tables for people: the same form to the second.
HUMAN_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
LOOKS_LIKE_TIME = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d")


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _action(cli: CliEnv, *args: str) -> dict[str, Any]:
    done = cli.run(*args, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert TIMESTAMP.match(result["at"]), result["at"]
    at = datetime.fromisoformat(result["at"])
    assert at.utcoffset() == timedelta(0)
    return result


def test_job_actions_answer_in_json(cli: CliEnv) -> None:
    submitted = cli.json("submit", str(make_job_dir(cli.root)))
    [job] = submitted["submitted"]
    job_id = job["job_id"]
    held = _action(cli, "jobs", "hold", job_id)
    assert (held["action"], held["target"], held["outcome"]) == ("hold", job_id, "held")
    assert _action(cli, "jobs", "hold", job_id)["outcome"] == "already_held"
    assert _action(cli, "jobs", "release", job_id)["outcome"] == "queued"
    assert _action(cli, "jobs", "requeue", job_id)["outcome"] == "already_queued"
    assert _action(cli, "jobs", "cancel", job_id)["outcome"] == "cancelled"
    assert _action(cli, "jobs", "requeue", job_id)["outcome"] == "queued"
    # The state the actions report is the state the job is in.
    assert cli.json("jobs", "show", job_id)["state"] == "queued"


def test_cluster_and_daemon_actions_answer_in_json(cli: CliEnv) -> None:
    off = _action(cli, "clusters", "disable", "local")
    assert (off["action"], off["target"], off["outcome"]) == ("disable", "local", "disabled")
    assert cli.json("clusters", "list")[0]["enabled"] is False
    assert _action(cli, "clusters", "enable", "local")["outcome"] == "enabled"
    stopped = _action(cli, "daemon", "stop")
    assert (stopped["outcome"], stopped["pid"]) == ("not_running", None)


def test_daemon_start_and_stop_answer_in_json_about_a_real_daemon(cli: CliEnv) -> None:
    started = _action(cli, "daemon", "start", "--wait", "60")
    assert (started["action"], started["target"], started["outcome"]) == (
        "daemon_start",
        "daemon",
        "started",
    )
    pid = started["pid"]
    try:
        os.kill(pid, 0)  # the pid it reports is a live process ...
        assert cli.json("daemon", "status")["pid"] == pid  # ... and the daemon's lock holder
    finally:
        stopped = _action(cli, "daemon", "stop")
    assert (stopped["outcome"], stopped["pid"]) == ("stopped", pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_every_timestamp_in_json_output_has_one_form(cli: CliEnv) -> None:
    job_id = cli.json("submit", str(make_job_dir(cli.root)))["submitted"][0]["job_id"]
    cli.run("jobs", "hold", job_id)
    outputs = [
        cli.json("jobs", "show", job_id),
        cli.json("jobs", "list"),
        cli.json("jobs", "history", job_id),
        cli.json("status"),
    ]
    times = [s for out in outputs for s in _strings(out) if LOOKS_LIKE_TIME.match(s)]
    assert times  # created_at, updated_at, audit times ...
    assert [t for t in times if not TIMESTAMP.match(t)] == []


def test_human_listings_show_times_in_the_same_iso_form(cli: CliEnv) -> None:
    from relaymd.models import Segment, SegmentOutcome
    from relaymd.state import StateStore

    job_id = cli.json("submit", str(make_job_dir(cli.root)))["submitted"][0]["job_id"]
    start = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    with StateStore.open(cli.db) as store:  # play the daemon: one segment of the job
        store.insert_segment(
            Segment(
                job_id=job_id,
                epoch=1,
                allocation_id="a1",
                cluster="local",
                started_at=start,
                ended_at=start + timedelta(seconds=60),
                outcome=SegmentOutcome.HANDOFF,
            )
        )
    history = cli.run("jobs", "history", job_id, env={"COLUMNS": "200"})
    assert history.returncode == 0, history.stderr
    assert "2026-03-04T05:06:07+00:00" in history.stdout
    shown = cli.run("jobs", "show", job_id).stdout
    created = [
        line.split()[-1] for line in shown.splitlines() if line.strip().startswith("created")
    ]
    assert len(created) == 1 and HUMAN_TIMESTAMP.match(created[0]), created
