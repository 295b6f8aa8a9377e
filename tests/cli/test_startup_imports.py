"""`relaymd --version` and `relaymd status` stay light: what they import, not how long it takes.

Each case runs the CLI's real entry point (`python -m relaymd.cli`) in a fresh interpreter and
reports `sys.modules` as it stands when the command has finished.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from relaymd.cli.main import PlainStatus, parse_plain_status
from tests.support.cli_env import CliEnv

# What only the daemon, storage, job-script or worker code needs; typer only parses, and
# the fast paths do their own parsing.
FORBIDDEN = ("boto3", "botocore", "asyncssh", "jinja2", "openmm", "typer")

RUN_AND_LIST_MODULES = """
import json, runpy, sys
out = sys.argv.pop(1)
try:
    runpy.run_module("relaymd.cli", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    assert not exc.code, exc.code
with open(out, "w") as f:
    json.dump(sorted(sys.modules), f)
"""


def imported_by(cli: CliEnv, *args: str) -> set[str]:
    out = cli.root / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, str(out), *args],
        env=cli.env,
        cwd=cli.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return {name.split(".")[0] for name in json.loads(out.read_text())}


@pytest.mark.parametrize(
    "args",
    [("--version",), ("status",), ("status", "--json"), ("--debug", "status")],
    ids=" ".join,
)
def test_hot_commands_skip_heavy_packages(cli: CliEnv, args: tuple[str, ...]) -> None:
    modules = imported_by(cli, *args)
    assert "relaymd" in modules  # the command did run in this interpreter
    assert sorted(modules.intersection(FORBIDDEN)) == []


def test_version_imports_no_pydantic_or_rich(cli: CliEnv) -> None:
    modules = imported_by(cli, "--version")
    assert sorted(modules.intersection(("pydantic", "rich", "yaml"))) == []


def test_other_commands_still_go_through_typer(cli: CliEnv) -> None:
    assert "typer" in imported_by(cli, "jobs", "list")


def typer_path(cli: CliEnv, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command through the typer app only (what main() did before the fast path)."""
    return subprocess.run(
        [sys.executable, "-c", "from relaymd.cli.app import app; app()", *args],
        env=cli.env,
        cwd=cli.root,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_fast_status_prints_what_the_typer_command_prints(cli: CliEnv) -> None:
    fast, slow = cli.run("status"), typer_path(cli, "status")
    assert (fast.returncode, slow.returncode) == (0, 0), fast.stderr + slow.stderr
    assert fast.stdout == slow.stdout
    assert "local" in fast.stdout
    fast_json, slow_json = (
        json.loads(cli.run("status", "--json").stdout),
        json.loads(typer_path(cli, "status", "--json").stdout),
    )
    fast_json.pop("generated_at")
    slow_json.pop("generated_at")
    assert fast_json == slow_json


def test_fast_status_reports_a_bad_config_like_typer(cli: CliEnv) -> None:
    bad = cli.root / "bad.yaml"
    bad.write_text("storage: [not, a, mapping]\n")
    fast = cli.run("--config", str(bad), "status")
    assert fast.returncode == 2
    assert str(bad) in fast.stderr and "error:" in fast.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["status"], PlainStatus(None, False, False)),
        (["status", "--json"], PlainStatus(None, False, True)),
        (["--debug", "-c", "a.yaml", "status"], PlainStatus(Path("a.yaml"), True, False)),
        (["--config=b.yaml", "status", "--json"], PlainStatus(Path("b.yaml"), False, True)),
        (["--config", "c.yaml", "status"], PlainStatus(Path("c.yaml"), False, False)),
    ],
)
def test_plain_status_calls_are_recognised(
    monkeypatch: pytest.MonkeyPatch, args: list[str], expected: PlainStatus
) -> None:
    monkeypatch.delenv("RELAYMD_CONFIG", raising=False)
    assert parse_plain_status(args) == expected


def test_plain_status_takes_the_config_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAYMD_CONFIG", "env.yaml")
    assert parse_plain_status(["status"]) == PlainStatus(Path("env.yaml"), False, False)
    assert parse_plain_status(["-c", "opt.yaml", "status"]) == PlainStatus(
        Path("opt.yaml"), False, False
    )
    monkeypatch.setenv("RELAYMD_CONFIG", "")
    assert parse_plain_status(["status"]) == PlainStatus(None, False, False)


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["status", "--help"],
        ["status", "-h"],
        ["status", "--bogus"],
        ["status", "extra"],
        ["status", "--debug"],  # --debug is a global option: typer reports the error
        ["--version", "status"],
        ["-c", "status"],
        ["--config="],
        ["--config", "--debug", "status"],
        ["jobs", "list"],
        ["--verbose", "status"],
    ],
    ids=repr,
)
def test_everything_else_goes_through_typer(
    monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.delenv("_RELAYMD_COMPLETE", raising=False)
    assert parse_plain_status(args) is None


def test_shell_completion_goes_through_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_RELAYMD_COMPLETE", "bash_complete")
    assert parse_plain_status(["status"]) is None
