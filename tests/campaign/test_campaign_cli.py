"""Campaign: CLI misuse, hostile user strings, bad RELAYMD_* environment values, secrets.

Real `relaymd` processes. Errors: the exit code, a message naming the argument/variable/
job, no traceback, and the job rows and stored objects unchanged. Hostile strings (a title
with terminal escapes or rich markup, a worker's log line) are printed literally.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from relaymd.state import StateStore
from tests.support.cli_env import (
    CliEnv,
    assert_clear_error,
    job_rows,
    make_job_dir,
    new_cli,
    stored_objects,
)

ESC = "\x1b"


def _submit(cli: CliEnv, title: str = "tiny", name: str = "job") -> str:
    job = make_job_dir(cli.root, name)
    done = cli.run("submit", str(job), "--title", title, "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["submitted"][0]["job_id"])


# --- hostile strings are shown, never interpreted --------------------------------------------

HOSTILE_TITLES = {
    "terminal escapes": (f"{ESC}]0;pwned{ESC}\\{ESC}[2J{ESC}[31mred", "\\x1b"),
    "rich markup": ("[red]x[/red][link=file:///etc/passwd]y[/link]", "[red]x[/red]"),
    "bidi override": ("abc\u202egnp.exe", "\\u202e"),
    "bell and backspace": ("ok\x07\x08\x08", "\\x07"),
}


@pytest.mark.parametrize("case", list(HOSTILE_TITLES))
def test_hostile_title_is_printed_literally(tmp_path: Path, case: str) -> None:
    cli = new_cli(tmp_path)
    title, literal = HOSTILE_TITLES[case]
    job = make_job_dir(cli.root)
    submitted = cli.run("submit", str(job), "--title", title)
    assert submitted.returncode == 0, submitted.stderr
    [(job_id, _, _, _)] = job_rows(cli)
    for args in (["jobs", "list"], ["jobs", "show", job_id], ["jobs", "history", job_id]):
        done = cli.run(*args)
        assert done.returncode == 0, done.stderr
        out = done.stdout + submitted.stdout
        assert ESC not in out and "\x07" not in out and "\u202e" not in out, repr(out)
        assert literal in done.stdout, (args, done.stdout)
    # The stored title is the user's, unchanged: only the display is made safe.
    assert cli.json("jobs", "show", job_id)["spec"]["title"] == title


def test_worker_log_lines_are_printed_literally(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    job_id = _submit(cli)
    # What a hostile engine could have printed, stored as the daemon stores a log tail.
    with StateStore.open(cli.db) as state:
        job = state.get_job(job_id)
        assert job is not None
        job.log_tail = [f"{ESC}]52;c;c2VjcmV0{ESC}\\", f"{ESC}[1A{ESC}[2Kdone"]
        job.failure_reason = f"engine said {ESC}[8mhidden"
        state.update_job(job)
    done = cli.run("jobs", "logs", job_id)
    assert done.returncode == 0, done.stderr
    assert ESC not in done.stdout and "\\x1b]52;c;" in done.stdout
    shown = cli.run("jobs", "show", job_id)
    assert ESC not in shown.stdout and "\\x1b[8mhidden" in shown.stdout


def test_hostile_directory_name_in_an_error(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    name = f"job{ESC}[2J[bold]x[/bold]"
    done = cli.run("submit", str(tmp_path / name))
    assert_clear_error(done, 4, "no such directory", "[bold]x[/bold]", "\\x1b[2J")
    assert ESC not in done.stderr


# --- RELAYMD_* environment values ------------------------------------------------------------

ENV_CASES: dict[str, tuple[dict[str, str], list[str], bool]] = {
    # name -> (environment, command, drop RELAYMD_CONFIG so the embedded default is used)
    "log level unknown": ({"RELAYMD_LOG_LEVEL": "LOUD"}, ["status"], False),
    "local walltime not a number": (
        {"RELAYMD_LOCAL_WALLTIME_MIN": "sixty"},
        ["config", "validate"],
        True,
    ),
    "local walltime infinite": ({"RELAYMD_LOCAL_WALLTIME_MIN": "inf"}, ["jobs", "list"], True),
    "local walltime absurd": (
        {"RELAYMD_LOCAL_WALLTIME_MIN": "1e12"},
        ["config", "validate"],
        True,
    ),
    "state dir with stray whitespace": ({"RELAYMD_STATE_DIR": " /tmp/x "}, ["status"], False),
}


@pytest.mark.parametrize("case", list(ENV_CASES))
def test_bad_environment_value_names_the_variable(tmp_path: Path, case: str) -> None:
    cli = new_cli(tmp_path)
    env, args, embedded = ENV_CASES[case]
    drop = ("RELAYMD_CONFIG",) if embedded else ()
    done = cli.run(*args, env=env, drop_env=drop)
    [variable] = env
    assert_clear_error(done, 2, variable)


def _s3_config(cli: CliEnv, extra: str = "") -> None:
    cli.config.write_text(
        cli.config.read_text().replace(
            f"url: file://{cli.data_dir}/storage",
            "url: s3://relaymd-campaign/jobs\n  endpoint_url: http://127.0.0.1:9\n"
            "  max_attempts: 1",
        )
        + extra
    )


def test_bad_storage_retry_variable_is_named_before_any_upload(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    _s3_config(cli)
    job = make_job_dir(tmp_path)
    done = cli.run(
        "submit",
        str(job),
        env={
            "RELAYMD_STORAGE_RETRY_WAIT_S": "nan",
            "RELAYMD_S3_ACCESS_KEY_ID": "AKIACAMPAIGN",
            "RELAYMD_S3_SECRET_ACCESS_KEY": "campaign-secret-value",
        },
    )
    assert_clear_error(done, 2, "RELAYMD_STORAGE_RETRY_WAIT_S")
    assert job_rows(cli) == []


# --- secrets ---------------------------------------------------------------------------------


def test_missing_storage_secret_is_named_and_nothing_registered(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    _s3_config(cli)
    done = cli.run("submit", str(make_job_dir(tmp_path)))
    assert_clear_error(done, 2, "RELAYMD_S3_ACCESS_KEY_ID")
    assert job_rows(cli) == []


def test_secret_value_never_printed_when_storage_fails(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    _s3_config(cli)
    secret = "campaign-secret-value-9f3k"
    done = cli.run(
        "--debug",
        "submit",
        str(make_job_dir(tmp_path)),
        env={
            "RELAYMD_S3_ACCESS_KEY_ID": "AKIACAMPAIGN",
            "RELAYMD_S3_SECRET_ACCESS_KEY": secret,
            "RELAYMD_STORAGE_RETRY_WAIT_S": "0.01",
            "RELAYMD_STORAGE_RETRY_MAX_WAIT_S": "0.02",
        },
    )
    assert done.returncode == 1, done.stderr
    assert "127.0.0.1:9" in done.stderr  # the endpoint is named
    assert secret not in done.stderr and secret not in done.stdout
    assert job_rows(cli) == []


def test_world_readable_secrets_file_is_refused(tmp_path: Path) -> None:
    cli = new_cli(tmp_path)
    secrets = tmp_path / "secrets.env"
    secrets.write_text("RELAYMD_S3_ACCESS_KEY_ID=a\nRELAYMD_S3_SECRET_ACCESS_KEY=supersecret\n")
    secrets.chmod(0o644)
    _s3_config(cli, f"secrets: {{provider: file, file: {secrets}}}\n")
    done = cli.run("submit", str(make_job_dir(tmp_path)))
    assert_clear_error(done, 2, str(secrets), "chmod 600")
    assert "supersecret" not in done.stderr
    assert job_rows(cli) == []


# --- misuse ----------------------------------------------------------------------------------


def _two_jobs(cli: CliEnv) -> list[str]:
    return [_submit(cli, name="a"), _submit(cli, name="b")]


MISUSE: dict[str, tuple[Callable[[CliEnv, list[str]], list[str]], int, list[str]]] = {
    "show an unknown job": (lambda c, ids: ["jobs", "show", "zzzzzz"], 4, ["zzzzzz"]),
    "hold an unknown job": (lambda c, ids: ["jobs", "hold", "zzzzzz"], 4, ["zzzzzz"]),
    "logs of an unknown job": (lambda c, ids: ["jobs", "logs", "qqq"], 4, ["qqq"]),
    "download a job with nothing yet": (
        lambda c, ids: ["jobs", "download", ids[0], "--dest", str(c.root / "out")],
        4,
        ["nothing to download"],
    ),
    "release a job that is not held": (
        lambda c, ids: ["jobs", "release", ids[0]],
        5,
        [],
    ),
    "unknown --state": (lambda c, ids: ["jobs", "list", "--state", "sleeping"], 2, ["--state"]),
    "unknown --engine": (
        lambda c, ids: ["submit", str(c.root / "a"), "--engine", "gromacs"],
        2,
        ["--engine", "gromacs"],
    ),
    "submit a missing directory": (
        lambda c, ids: ["submit", str(c.root / "nope")],
        4,
        ["nope", "no such directory"],
    ),
    "submit to an unknown cluster": (
        lambda c, ids: ["submit", str(c.root / "a"), "--cluster", "atlantis"],
        2,
        ["atlantis"],
    ),
    "enable an unknown cluster": (
        lambda c, ids: ["clusters", "enable", "atlantis"],
        4,
        ["atlantis"],
    ),
    "validate a missing config": (
        lambda c, ids: ["config", "validate", str(c.root / "missing.yaml")],
        2,
        ["missing.yaml", "not found"],
    ),
    "status with a missing -c file": (
        lambda c, ids: ["-c", str(c.root / "gone.yaml"), "status"],
        2,
        ["gone.yaml"],
    ),
    "negative steps flag": (
        lambda c, ids: ["submit", str(c.root / "a"), "--steps", "-3"],
        2,
        ["total_steps"],
    ),
}


@pytest.mark.parametrize("case", list(MISUSE))
def test_misuse_is_refused_and_loses_nothing(tmp_path: Path, case: str) -> None:
    cli = new_cli(tmp_path)
    ids = _two_jobs(cli)
    before_rows, before_objects = job_rows(cli), stored_objects(cli)
    make_args, code, names = MISUSE[case]
    done = cli.run(*make_args(cli, ids))
    assert_clear_error(done, code, *names)
    assert job_rows(cli) == before_rows
    assert stored_objects(cli) == before_objects
