"""`relaymd demo` on an operator-only install (no OpenMM): one clear message, no traceback."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli_env import CliEnv


def test_demo_without_openmm_says_what_to_install(cli: CliEnv, tmp_path: Path) -> None:
    # An interpreter where `openmm` cannot be imported, as after `uv tool install '.[operator]'`.
    hide = tmp_path / "hide-openmm"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['openmm'] = None\n")
    done = cli.run("demo", env={"PYTHONPATH": str(hide)})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "OpenMM is not installed" in done.stderr and ".[operator,worker]" in done.stderr
    assert not (cli.state_dir / "state.sqlite").exists()  # nothing submitted
