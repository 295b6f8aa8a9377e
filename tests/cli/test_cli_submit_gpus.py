"""`relaymd submit` of a job that needs several GPUs (ADR 0026): it needs a command engine and
a partition with that many GPUs per allocation; otherwise one clear error, nothing stored."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli_env import CliEnv, assert_clear_error, job_count, local_config, make_job_dir

ATOM_CONFIG = "BASENAME = 'lig'\nPRNT_FREQUENCY = 5000\nPRODUCTION_STEPS = 1000\n"
ATOM_SPEC = (
    "engine:\n  kind: command\n  preset: atom\n  command: rbfe_production lig.cntl\n"
    "  target_samples: 100\nresources: {gpus: 2}\n"
)


def _four_gpu_partition(cli: CliEnv) -> None:
    cli.config.write_text(
        local_config(cli.data_dir).replace("gpus_per_allocation: 0", "gpus_per_allocation: 4")
    )


def _atom_job(root: Path) -> Path:
    directory = root / "atom"
    directory.mkdir()
    (directory / "lig.cntl").write_text(ATOM_CONFIG)
    (directory / "relaymd.yaml").write_text(ATOM_SPEC)
    return directory


def test_an_openmm_job_cannot_ask_for_two_gpus(cli: CliEnv) -> None:
    _four_gpu_partition(cli)
    spec = "title: t\nengine: {kind: openmm, total_steps: 1000}\nresources: {gpus: 2}\n"
    directory = make_job_dir(cli.root, spec=spec)
    done = cli.run("submit", str(directory))
    assert_clear_error(done, 2, "resources.gpus", "command engine", "relaymd.yaml")
    assert job_count(cli) == 0


def test_a_two_gpu_atom_job_needs_a_partition_with_two_gpus(cli: CliEnv) -> None:
    directory = _atom_job(cli.root)
    done = cli.run("submit", str(directory))
    assert_clear_error(done, 2, "resources.gpus", "gpus_per_allocation >= 2")
    assert job_count(cli) == 0
    _four_gpu_partition(cli)
    done = cli.run("submit", str(directory), "--dry-run")
    assert done.returncode == 0, done.stderr
