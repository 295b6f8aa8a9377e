"""`clusters test` runs its checks where the daemon and the job script do: SLURM's commands
without `setup:` (the daemon's login-node scripts do not run it), the image checks after it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from relaymd.cli.cluster_checks import build_check_script, parse_check_output
from relaymd.models import ClusterProfile


def _tool(folder: Path, name: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\necho 1.0\n")
    path.chmod(0o755)


def _run_checks(tmp_path: Path, setup: list[str]) -> dict[str, bool]:
    profile = ClusterProfile.model_validate(
        {
            "name": "c",
            "transport": "local",
            "scratch": str(tmp_path / "scratch"),
            "partitions": [{"name": "p", "walltime_minutes": 60}],
            "images": {"openmm": {"sif": str(tmp_path / "w.sif")}},
            "setup": setup,
        }
    )
    (tmp_path / "w.sif").write_text("image")
    # Only the tools the checks use: this machine may have SLURM itself in /usr/bin.
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    for tool in ("mkdir", "touch", "rm"):
        if not (base / tool).exists():
            (base / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")
    done = subprocess.run(
        ["/bin/bash", "-c", build_check_script(profile)],
        env={"PATH": f"{tmp_path / 'login'}:{base}"},
        capture_output=True,
        text=True,
        check=True,
    )
    return {r.name: r.ok for r in parse_check_output(done.stdout)}


def test_slurm_reachable_only_through_setup_fails_as_the_daemon_would(tmp_path: Path) -> None:
    for tool in ("sbatch", "squeue", "sacct"):
        _tool(tmp_path / "module-slurm", tool)
    _tool(tmp_path / "module-apptainer", "apptainer")
    results = _run_checks(
        tmp_path,
        [f"export PATH={tmp_path / 'module-slurm'}:{tmp_path / 'module-apptainer'}:$PATH"],
    )
    # The daemon runs sbatch without `setup:`: a pass here would be a false promise.
    assert results["sbatch"] is False and results["squeue"] is False
    # The job script runs `setup:` before apptainer, so this check does too.
    assert results["apptainer"] is True and results["image:openmm"] is True


def test_slurm_on_the_login_path_passes(tmp_path: Path) -> None:
    for tool in ("sbatch", "squeue", "sacct"):
        _tool(tmp_path / "login", tool)
    results = _run_checks(tmp_path, [])
    assert results["sbatch"] is True and results["squeue"] is True and results["sacct"] is True
    assert results["apptainer"] is False  # not on PATH and no setup loads it


def test_setup_cannot_leak_into_the_slurm_checks_through_a_failing_line(tmp_path: Path) -> None:
    _tool(tmp_path / "module-apptainer", "apptainer")
    results = _run_checks(tmp_path, ["false", f"export PATH={tmp_path / 'module-apptainer'}:$PATH"])
    assert results["apptainer"] is True
    assert results["scratch"] is True
