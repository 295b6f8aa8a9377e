"""Job scripts of multi-GPU allocations (ADR 0026): `relaymd-worker slots`, one --slot-dir per
slot, every slot folder bound into Apptainer; one slot renders exactly as before."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from relaymd.scheduler import DirectScheduler, SlurmScheduler
from relaymd.scheduler.base import JobScriptContext, Scheduler
from relaymd.scheduler.templates import render
from tests.unit.test_scheduler_render import allocation, bash_syntax_ok, gpu_profile

SLOTS = [f"$SCRATCH/relaymd/alloc/a0000test0001-g{i}" for i in range(4)]
ARGS = ["--alloc-dir", "$SCRATCH/relaymd/alloc/a0000test0001-g0", "--idle-timeout", "60"]


def context(scheduler: type[Scheduler], native: bool, slot_dirs: list[str]) -> JobScriptContext:
    profile = gpu_profile(images={}, native_worker=["relaymd-worker"]) if native else gpu_profile()
    base = scheduler(profile).script_context(allocation(), profile, ARGS)
    return base.model_copy(update={"slot_dirs": slot_dirs})


def exec_line(text: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith("exec ")]
    return line


def shellcheck_ok(text: str) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    done = subprocess.run(
        ["shellcheck", "-s", "bash", "-"], input=text, text=True, capture_output=True
    )
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(
    ("scheduler", "template"),
    [(SlurmScheduler, "slurm.sbatch.j2"), (DirectScheduler, "direct.sh.j2")],
)
def test_native_slots_script(scheduler: type[Scheduler], template: str) -> None:
    text = render(template, job=context(scheduler, True, SLOTS))
    slot_args = " ".join(
        f'--slot-dir "${{SCRATCH}}"/relaymd/alloc/a0000test0001-g{i}' for i in range(4)
    )
    assert exec_line(text) == (
        f"exec relaymd-worker slots {slot_args} --alloc-dir "
        '"${SCRATCH}"/relaymd/alloc/a0000test0001-g0 --idle-timeout 60'
    )
    bash_syntax_ok(text)
    shellcheck_ok(text)


def test_apptainer_slots_script_binds_every_slot_folder() -> None:
    text = render("slurm.sbatch.j2", job=context(SlurmScheduler, False, SLOTS))
    binds = " ".join(f'--bind "${{SCRATCH}}"/relaymd/alloc/a0000test0001-g{i}' for i in range(4))
    assert f"relaymd_binds=({binds})" in text.splitlines()
    line = exec_line(text)
    assert line.startswith("exec apptainer exec --cleanenv --no-home --nv")
    assert " relaymd-worker slots --slot-dir " in line and line.count("--slot-dir") == 4
    bash_syntax_ok(text)
    shellcheck_ok(text)


@pytest.mark.parametrize("native", [True, False])
def test_one_slot_renders_as_a_plain_allocation(native: bool) -> None:
    plain = render("slurm.sbatch.j2", job=context(SlurmScheduler, native, []))
    assert render("slurm.sbatch.j2", job=context(SlurmScheduler, native, SLOTS[:1])) == plain
    assert " slots " not in exec_line(plain)
