"""Job scripts rendered from clusters/*.j2: exact lines, quoting, and injection attempts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from relaymd.models import Allocation, ClusterProfile
from relaymd.scheduler import DirectScheduler, SlurmScheduler, UnsafeValue, make_scheduler

CLUSTERS = Path(__file__).resolve().parents[2] / "clusters"
# A leading $VAR or ~/ expands (profile paths like $SCRATCH/relaymd); nothing else does.
NASTY = [
    "$(touch {pwned})",
    "; rm -rf ~",
    "`touch {pwned}`",
    "a'b\"c",
    "x\ny",
    "${{HOME}}$(touch {pwned})",
]


def gpu_profile(**overrides: object) -> ClusterProfile:
    data: dict[str, object] = {
        "name": "clusterA",
        "ssh": {"host": "login.a"},
        "scratch": "$SCRATCH/relaymd",
        "partitions": [
            {
                "name": "gpu",
                "walltime_minutes": 240,
                "gpus_per_allocation": 1,
                "gpu_type": "a100",
                "cpus_per_task": 8,
                "memory": "32G",
                "account": "chem-lab",
                "qos": "normal",
                "constraint": "a100&ib",
                "extra_sbatch": ["--mail-type=NONE"],
            }
        ],
        "images": {"openmm": {"sif": "/project/images/relaymd-openmm.sif"}},
        "setup": ["module load apptainer/1.3"],
    }
    data.update(overrides)
    return ClusterProfile.model_validate(data)


def allocation(**overrides: object) -> Allocation:
    data: dict[str, object] = {
        "id": "a0000test0001",
        "cluster": "clusterA",
        "partition": "gpu",
        "image": "openmm",
        "walltime_s": 14400,
    }
    data.update(overrides)
    return Allocation.model_validate(data)


def bash_syntax_ok(script: str) -> None:
    done = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr


def test_slurm_script_lines() -> None:
    profile = gpu_profile()
    text = SlurmScheduler(profile).render_job_script(
        allocation(), profile, ["--alloc-dir", "$SCRATCH/relaymd/alloc/a0000test0001"]
    )
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    sbatch = [line for line in lines if line.startswith("#SBATCH")]
    assert sbatch == [
        "#SBATCH --job-name=relaymd-a0000test0001",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=04:00:00",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gres=gpu:a100:1",
        "#SBATCH --account=chem-lab",
        "#SBATCH --qos=normal",
        "#SBATCH --constraint=a100&ib",
        "#SBATCH --mem=32G",
        "#SBATCH --mail-type=NONE",
        "#SBATCH --signal=B:USR1@120",  # the walltime warning; TERM means stop now
        # --output is not here: sbatch does not expand $SCRATCH; the submit command passes it.
        "#SBATCH --open-mode=append",
        "#SBATCH --no-requeue",  # SLURM must not bring the allocation back: RelayMD requeues
    ]
    # All #SBATCH lines come before the first command, or sbatch ignores them.
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert all(lines.index(line) < first_command for line in sbatch)
    assert "module load apptainer/1.3" in lines
    assert lines[-1] == (
        'exec apptainer exec --cleanenv --no-home --nv "${relaymd_binds[@]}"'
        " /project/images/relaymd-openmm.sif"
        ' relaymd-worker --alloc-dir "${SCRATCH}"/relaymd/alloc/a0000test0001'
    )
    # Only the allocation folder is bound, never the whole scratch root.
    assert 'relaymd_binds=(--bind "${SCRATCH}"/relaymd/alloc/a0000test0001)' in lines
    bash_syntax_ok(text)


def test_slurm_script_long_walltime_no_gpu_literal_output_and_uri_image() -> None:
    profile = gpu_profile(
        scratch="/scratch/me/relaymd",
        partitions=[{"name": "long", "walltime_minutes": 20160, "gpus_per_allocation": 0}],
        images={"openmm": {"uri": "docker://ghcr.io/x/relaymd:1"}},
    )
    alloc = allocation(partition="long", walltime_s=14 * 86400)
    text = SlurmScheduler(profile).render_job_script(alloc, profile, [])
    assert "#SBATCH --time=14-00:00:00" in text
    assert "--gres" not in text and "--account" not in text and "--mem" not in text
    assert "#SBATCH --output=/scratch/me/relaymd/alloc/a0000test0001/slurm-%j.out" in text
    assert text.splitlines()[-1] == (
        'exec apptainer exec --cleanenv --no-home "${relaymd_binds[@]}"'
        " docker://ghcr.io/x/relaymd:1 relaymd-worker"
    )
    assert "relaymd_binds=(--bind /scratch/me/relaymd/alloc/a0000test0001)" in text
    bash_syntax_ok(text)


def test_signal_lead_is_capped_for_short_walltimes() -> None:
    profile = gpu_profile()
    text = SlurmScheduler(profile).render_job_script(allocation(walltime_s=60), profile, [])
    assert "#SBATCH --signal=B:USR1@30" in text
    assert "export RELAYMD_WARNING_LEAD_S=30" in text
    assert "#SBATCH --time=00:01:00" in text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "debug\n#SBATCH --uid=0"),
        ("name", "debug --uid=0"),
        ("account", "chem\n#SBATCH --uid=0"),
        ("qos", "normal --uid=0"),
        ("memory", "1G'"),
        ("constraint", "a100`id`"),
        ("gpu_type", "a100 --uid=0"),
        ("extra_sbatch", ["--mail-type=END\n#SBATCH --uid=0"]),
        ("extra_sbatch", ["echo pwned"]),
    ],
)
def test_sbatch_injection_is_rejected(field: str, value: object) -> None:
    profile = gpu_profile()
    # model_copy skips validation: the renderer must not rely on the profile's validators.
    part = profile.partitions[0].model_copy(update={field: value})
    bad = profile.model_copy(update={"partitions": [part]})
    alloc = allocation(partition=part.name)
    with pytest.raises(UnsafeValue) as caught:
        SlurmScheduler(bad).render_job_script(alloc, bad, [])
    label = {"name": "partition", "extra_sbatch": "extra_sbatch", "gpu_type": "gpu_type"}
    assert label.get(field, field) in str(caught.value)


def test_partition_with_newline_is_already_refused_by_the_profile() -> None:
    with pytest.raises(ValueError, match="partitions"):
        gpu_profile(partitions=[{"name": "debug\n#SBATCH --uid=0", "walltime_minutes": 5}])


@pytest.mark.parametrize("scheduler_kind", ["slurm", "direct"])
def test_hostile_values_stay_literal_when_the_script_runs(
    scheduler_kind: str, tmp_path: Path
) -> None:
    pwned = tmp_path / "pwned"
    args = [v.format(pwned=pwned) for v in NASTY]
    profile = ClusterProfile.model_validate(
        {
            "name": "local",
            "transport": "local",
            "scheduler": scheduler_kind,
            "scratch": str(tmp_path / "scratch"),
            "partitions": [{"name": "p", "walltime_minutes": 1, "gpus_per_allocation": 0}],
            # The "worker" prints each argument on its own line, NUL-separated.
            "native_worker": ["printf", "%s\\0", f"$(touch {pwned})"],
        }
    )
    alloc = allocation(cluster="local", partition="p", walltime_s=60)
    text = make_scheduler(profile).render_job_script(alloc, profile, args)
    bash_syntax_ok(text)
    (tmp_path / "scratch" / "alloc" / alloc.id).mkdir(parents=True)
    done = subprocess.run(["bash", "-c", text], capture_output=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.decode().split("\0")[:-1]
    home = str(Path.home())
    expected = [f"$(touch {pwned})", *args[:-1], f"{home}$(touch {pwned})"]
    assert printed == expected
    assert not pwned.exists()


def test_hostile_image_path_and_apptainer_binary_are_quoted(tmp_path: Path) -> None:
    profile = gpu_profile(
        images={"openmm": {"sif": "/img/$(touch x).sif"}}, apptainer="apptainer; rm -rf ~"
    )
    text = SlurmScheduler(profile).render_job_script(allocation(), profile, ["`id`"])
    last = text.splitlines()[-1]
    assert last.startswith("exec 'apptainer; rm -rf ~' exec --cleanenv --no-home --nv")
    assert "'/img/$(touch x).sif' relaymd-worker '`id`'" in last
    bash_syntax_ok(text)


def test_missing_image_names_the_fix() -> None:
    profile = gpu_profile()
    with pytest.raises(UnsafeValue, match="add it under `images:`"):
        SlurmScheduler(profile).render_job_script(allocation(image="atom-openmm"), profile, [])


def test_direct_script_exports_deadline_and_runs_native() -> None:
    profile = ClusterProfile.model_validate(
        {
            "name": "local",
            "transport": "local",
            "scheduler": "direct",
            "scratch": "~/relaymd",
            "partitions": [{"name": "local", "walltime_minutes": 0.5, "gpus_per_allocation": 0}],
            "native_worker": ["/usr/bin/python3", "-m", "worker_entry"],
        }
    )
    text = DirectScheduler(profile).render_job_script(
        allocation(partition="local", walltime_s=30), profile, ["--alloc-dir", "~/relaymd/alloc/a1"]
    )
    assert "#SBATCH" not in text
    assert "export RELAYMD_DEADLINE=$(( $(date +%s) + 30 ))" in text
    assert 'cd "$HOME"/relaymd/alloc/a0000test0001 || exit 1' in text
    assert text.splitlines()[-1] == (
        'exec /usr/bin/python3 -m worker_entry --alloc-dir "$HOME"/relaymd/alloc/a1'
    )
    bash_syntax_ok(text)


def test_templates_ship_in_clusters_folder() -> None:
    assert (CLUSTERS / "slurm.sbatch.j2").is_file()
    assert (CLUSTERS / "direct.sh.j2").is_file()


@pytest.mark.parametrize("name", ["clusterA", "clusterB"])
def test_example_profiles_load_and_render(name: str) -> None:
    import yaml

    profile = ClusterProfile.model_validate(yaml.safe_load((CLUSTERS / f"{name}.yaml").read_text()))
    for part in profile.partitions:
        for image in profile.images:
            alloc = allocation(
                cluster=name,
                partition=part.name,
                image=image,
                walltime_s=int(part.walltime_minutes * 60),
            )
            text = make_scheduler(profile).render_job_script(alloc, profile, ["--alloc-dir", "x"])
            assert f"#SBATCH --partition={part.name}" in text
            assert "relaymd-worker --alloc-dir x" in text
            bash_syntax_ok(text)


def _run_native_script(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """Render a native-worker SLURM script whose 'worker' prints its environment; run it."""
    profile = gpu_profile(scratch=str(tmp_path), images={}, setup=[], native_worker=["env"])
    text = SlurmScheduler(profile).render_job_script(allocation(), profile, [])
    script = tmp_path / "job.sh"
    script.write_text(text)
    done = subprocess.run(
        ["bash", str(script)],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def test_slurm_script_exports_slurms_end_time_and_warning_lead(tmp_path: Path) -> None:
    seen = _run_native_script(tmp_path, {"SLURM_JOB_END_TIME": "1796319000"})
    assert seen["RELAYMD_DEADLINE"] == "1796319000"
    assert seen["RELAYMD_WARNING_LEAD_S"] == "120"
    # No end time and no squeue answer: the worker is told nothing rather than a wrong time.
    seen = _run_native_script(tmp_path, {"SLURM_JOB_ID": "42"})
    assert seen["RELAYMD_DEADLINE"] == ""


def test_walltime_warning_before_the_worker_is_ready_is_ignored_not_fatal(
    tmp_path: Path,
) -> None:
    """USR1 (default action: terminate) can come seconds after start on a short walltime."""
    profile = gpu_profile(scratch=str(tmp_path), images={}, setup=[], native_worker=["sleep"])
    text = SlurmScheduler(profile).render_job_script(allocation(), profile, [])
    script = tmp_path / "job.sh"
    # The 'worker' is `sleep 2`; the script signals itself as SLURM would, before the exec.
    script.write_text(
        text.replace("exec sleep", 'kill -USR1 $$\nkill -USR1 "$BASHPID"\nexec sleep 2 #')
    )
    done = subprocess.run(["bash", str(script)], env={"PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0


STAND_IN_APPTAINER = """#!/bin/bash
# Apptainer cannot run here: this stand-in records its argv and the environment it was given.
printf '%s\\0' "$@" > "$RECORD.argv"
env -0 > "$RECORD.env"
"""


def _run_apptainer_script(
    tmp_path: Path, env: dict[str, str], binary: str = "apptainer"
) -> tuple[list[str], dict[str, str]]:
    stand_in = tmp_path / "bin" / binary
    stand_in.parent.mkdir()
    stand_in.write_text(STAND_IN_APPTAINER)
    stand_in.chmod(0o755)
    profile = gpu_profile(scratch=str(tmp_path / "scratch"), setup=[], apptainer=str(stand_in))
    alloc = allocation()
    folder = tmp_path / "scratch" / "alloc" / alloc.id
    folder.mkdir(parents=True)
    text = SlurmScheduler(profile).render_job_script(alloc, profile, ["--alloc-dir", str(folder)])
    script = folder / "job.sh"
    script.write_text(text)
    record = tmp_path / "record"
    subprocess.run(
        ["bash", str(script)],
        env={"PATH": "/usr/bin:/bin", "RECORD": str(record), **env},
        cwd=folder,
        check=True,
    )
    argv = record.with_suffix(".argv").read_bytes().decode().split("\0")[:-1]
    entries = record.with_suffix(".env").read_bytes().decode().split("\0")[:-1]
    return argv, dict(e.split("=", 1) for e in entries)


def test_apptainer_gets_a_clean_environment_and_only_the_allocation_folder(
    tmp_path: Path,
) -> None:
    node_tmp = tmp_path / "localscratch"
    node_tmp.mkdir()
    argv, env = _run_apptainer_script(
        tmp_path,
        {
            "HOME": str(tmp_path / "home"),
            "PYTHONPATH": "/home/me/.local/lib/python3.11/site-packages",
            "LD_LIBRARY_PATH": "/opt/host/lib",
            "SLURM_JOB_END_TIME": "1796319000",
            "SLURM_JOB_ID": "4242",
            "CUDA_VISIBLE_DEVICES": "1",
            "TMPDIR": str(node_tmp),
            "RELAYMD_EXTRA": "a value, with: commas",
        },
    )
    folder = str(tmp_path / "scratch" / "alloc" / "a0000test0001")
    assert argv == [
        "exec",
        "--cleanenv",
        "--no-home",
        "--nv",
        "--bind",
        folder,
        "--bind",
        str(node_tmp),
        "/project/images/relaymd-openmm.sif",
        "relaymd-worker",
        "--alloc-dir",
        folder,
    ]
    inside = {
        k.removeprefix("APPTAINERENV_"): v
        for k, v in env.items()
        if k != k.removeprefix("APPTAINERENV_")
    }
    assert inside == {
        "PYTHONNOUSERSITE": "1",
        "RELAYMD_ALLOCATION_ID": "a0000test0001",
        "RELAYMD_DEADLINE": "1796319000",  # from the batch shell: squeue is not in the image
        "RELAYMD_WARNING_LEAD_S": "120",
        "RELAYMD_EXTRA": "a value, with: commas",
        "SLURM_JOB_END_TIME": "1796319000",
        "SLURM_JOB_ID": "4242",
        "CUDA_VISIBLE_DEVICES": "1",
        "TMPDIR": str(node_tmp),
    }


def test_tmpdir_under_tmp_is_not_bound_twice_and_singularity_gets_its_prefix(
    tmp_path: Path,
) -> None:
    argv, env = _run_apptainer_script(tmp_path, {"TMPDIR": "/tmp"}, binary="singularity")
    assert argv.count("--bind") == 1
    assert env["SINGULARITYENV_PYTHONNOUSERSITE"] == "1"
    assert env["SINGULARITYENV_RELAYMD_DEADLINE"] == ""
    assert not any(k.startswith("APPTAINERENV_") for k in env)
