"""`relaymd submit` on command jobs: what it says about outputs that cannot be kept exact."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli_env import CliEnv

ATOM_CONFIG = "BASENAME = 'lig'\nPRNT_FREQUENCY = 5000\nPRODUCTION_STEPS = 1000\n"


def _job(root: Path, spec: str, files: dict[str, str]) -> Path:
    directory = root / "job"
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    (directory / "relaymd.yaml").write_text(spec)
    return directory


def test_generic_outputs_without_an_exact_rule_are_named_in_a_warning(cli: CliEnv) -> None:
    directory = _job(
        cli.root,
        "engine:\n  kind: command\n  command: python run.py\n  checkpoint_globs: ['*.chk']\n"
        "  output_globs: ['*.log', 'traj/*.dcd']\n  progress_globs: ['*.log']\n"
        "resources: {gpus: 0}\n",
        {"run.py": "print(1)\n"},
    )
    done = cli.run("submit", str(directory), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "warning:" in done.stderr and "*.log, traj/*.dcd" in done.stderr
    assert "output_line_counts" in done.stderr


def test_generic_outputs_with_line_counts_or_in_the_checkpoint_set_are_quiet(
    cli: CliEnv,
) -> None:
    directory = _job(
        cli.root,
        "engine:\n  kind: command\n  command: python run.py\n"
        "  checkpoint_globs: ['*.chk', 'samples.txt']\n  output_globs: ['samples.txt']\n"
        "resources: {gpus: 0}\n",
        {"run.py": "print(1)\n"},
    )
    done = cli.run("submit", str(directory), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "warning:" not in done.stderr
    spec = directory / "relaymd.yaml"
    spec.write_text(
        "engine:\n  kind: command\n  command: python run.py\n  checkpoint_globs: ['*.chk']\n"
        "  output_globs: ['*.log']\n  output_line_counts: counts.json\nresources: {gpus: 0}\n"
    )
    done = cli.run("submit", str(directory), "--dry-run")
    assert done.returncode == 0 and "warning:" not in done.stderr, done.stderr


def test_atom_preset_reads_its_config_at_submit(cli: CliEnv) -> None:
    spec = (
        "engine:\n  kind: command\n  preset: atom\n  command: rbfe_production lig.cntl\n"
        "  target_samples: 100\nresources: {gpus: 0}\n"
    )
    directory = _job(cli.root, spec, {"lig.cntl": ATOM_CONFIG})
    done = cli.run("submit", str(directory), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "warning:" not in done.stderr
    # A config without PRNT_FREQUENCY: the sample files could not be cut; refused.
    (directory / "lig.cntl").write_text("BASENAME = 'lig'\n")
    done = cli.run("submit", str(directory))
    assert done.returncode == 2, done.stderr
    assert "lig.cntl: PRNT_FREQUENCY is missing" in done.stderr
    assert "Traceback" not in done.stderr
    # No config argument at all.
    (directory / "relaymd.yaml").write_text(spec.replace(" lig.cntl", ""))
    done = cli.run("submit", str(directory))
    assert done.returncode == 2 and "preset atom needs the AToM config file" in done.stderr
    # The config is not in the job directory.
    (directory / "lig.cntl").unlink()
    (directory / "relaymd.yaml").write_text(spec)
    done = cli.run("submit", str(directory))
    assert done.returncode == 4 and "lig.cntl" in done.stderr, done.stderr
    assert not cli.storage_dir.exists() or not any(cli.storage_dir.rglob("*.tar.gz"))
