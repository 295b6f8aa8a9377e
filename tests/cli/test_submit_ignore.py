"""`relaymd submit` with a `.relaymdignore`: says what it leaves out, refuses to drop inputs."""

from __future__ import annotations

import json

from tests.support.cli_env import CliEnv, make_job_dir, stored_objects


def test_submit_says_what_the_ignore_file_leaves_out(cli: CliEnv) -> None:
    job = make_job_dir(cli.root)
    (job / "scratch-output").mkdir()
    (job / "scratch-output" / "big.dcd").write_bytes(b"x" * 1000)
    (job / "notes.log").write_text("n")
    (job / ".relaymdignore").write_text("scratch-output/\n*.log\n")
    done = cli.run("submit", str(job), "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    [planned] = json.loads(done.stdout)
    assert planned["left_out"] == ["notes.log", "scratch-output/"]
    assert ".relaymdignore leaves out 2: notes.log, scratch-output/" in done.stderr


def test_an_ignore_file_that_drops_a_needed_input_is_refused(cli: CliEnv) -> None:
    job = make_job_dir(cli.root)
    (job / ".relaymdignore").write_text("*.xml\n!integrator.xml\n")
    done = cli.run("submit", str(job))
    assert done.returncode != 0
    assert ".relaymdignore: leaves out system.xml, which engine.system needs" in done.stderr
    assert "Traceback" not in done.stderr
    assert stored_objects(cli) == []
