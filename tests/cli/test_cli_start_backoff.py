"""A worker that dies at start: the partition backs off instead of resubmitting every poll.

Real `relaymd daemon run` processes on the local (direct) scheduler; the worker command is a
shell that records each start in a file of its own and exits 3 at once. The verdict counts
those records, not RelayMD's rows; the reason must be visible in `status`, `clusters list`
and `jobs show`, and must survive a daemon restart.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.cli_env import TINY_SPEC, CliEnv, make_job_dir


def _config(cli: CliEnv, starts: Path) -> None:
    worker = f"echo started >> {starts}; exit 3"
    cli.config.write_text(
        f"""\
storage:
  url: file://{cli.data_dir}/storage
clusters:
  - name: local
    transport: local
    scheduler: direct
    scratch: {cli.data_dir}/scratch
    native_worker: [/bin/sh, -c, "{worker}", worker]
    max_workers: 2
    command_timeout_s: 10
    poll: {{min_interval_s: 0.5, max_interval_s: 1.0}}
    partitions:
      - {{name: short, walltime_minutes: 10, gpus_per_allocation: 0, max_pending: 1,
          max_running: 1}}
daemon: {{min_segment_s: 2, start_backoff_s: 900}}
worker: {{heartbeat_interval_s: 1, handoff_margin_min_s: 2, handoff_margin_max_s: 4}}
"""
    )


def _starts(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_worker_dying_at_start_backs_off_and_says_why(cli: CliEnv) -> None:
    starts = cli.root / "starts.log"
    _config(cli, starts)
    job = make_job_dir(cli.root, "job", TINY_SPEC.format(title="doomed"))
    done = cli.run("submit", str(job), "--json")
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["submitted"][0]["job_id"]

    done = cli.run("daemon", "run", "--max-cycles", "30", timeout=600)
    assert done.returncode == 0, done.stderr
    first_run = _starts(starts)
    # Two start failures in a row, then the 15-minute backoff: no third start in 30 polls
    # (without backoff every poll or two started another worker).
    assert 2 <= first_run <= 3, first_run

    # The reason is shown where an operator looks.
    for args in (["status"], ["clusters", "list"], ["jobs", "show", job_id]):
        shown = cli.run(*args)
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        assert "local/short" in text and "ended without the worker reporting" in text, (
            args,
            shown.stdout,
        )
        assert "exit code 3" in text, (args, shown.stdout)
    [cluster] = cli.json("clusters", "list")
    assert cluster["backoff"] and "next try in" in cluster["backoff"][0]
    assert cli.json("jobs", "show", job_id)["state"] == "queued"  # not lost, just waiting

    # A restarted daemon keeps waiting.
    done = cli.run("daemon", "run", "--max-cycles", "10", timeout=600)
    assert done.returncode == 0, done.stderr
    assert _starts(starts) == first_run
