"""Cutting sample files to a checkpoint round: AToM config keys, checkpoint XML, the cut."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relaymd.atom_config import AtomConfigError, find_config_arg, load_atom_layout
from worker_entry.engines.base import EngineFailure
from worker_entry.engines.output_cut import (
    apply_cuts,
    atom_round,
    counted_cuts,
    cut_file,
    replica_md_steps,
)


def test_atom_config_in_every_format_atom_reads(tmp_path: Path) -> None:
    cntl = tmp_path / "job.cntl"
    cntl.write_text("# comment\nBASENAME = 'temoa-g1'\nPRNT_FREQUENCY = 5000  # steps\n")
    layout = load_atom_layout(cntl)
    assert (layout.basename, layout.prnt_frequency) == ("temoa-g1", 5000)
    assert layout.checkpoint_file == "temoa-g1_ckpt.xml"
    yml = tmp_path / "job.yaml"
    yml.write_text("BASENAME: fkbp\nPRNT_FREQUENCY: 100\nCHECKPOINT_FILE: ckpt.xml\n")
    assert load_atom_layout(yml).checkpoint_file == "ckpt.xml"
    js = tmp_path / "job.json"
    js.write_text(json.dumps({"BASENAME": "x", "PRNT_FREQUENCY": "200"}))
    assert load_atom_layout(js).prnt_frequency == 200


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PRNT_FREQUENCY = 10\n", "BASENAME is missing"),
        ("BASENAME = a\n", "PRNT_FREQUENCY is missing"),
        ("BASENAME = a\nPRNT_FREQUENCY = 2.5\n", "not a positive integer"),
        ("BASENAME = a\nPRNT_FREQUENCY = often\n", "not a number"),
        ("BASENAME = a\nPRNT_FREQUENCY = 1\nCHECKPOINT_FILE = ../x.xml\n", "not a file name"),
    ],
)
def test_atom_config_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.cntl"
    path.write_text(text)
    with pytest.raises(AtomConfigError, match=message) as info:
        load_atom_layout(path)
    assert str(path) in str(info.value)


def test_config_argument_is_the_last_one_with_a_config_suffix() -> None:
    assert find_config_arg(["rbfe_production", "eralpha.yaml"]) == "eralpha.yaml"
    assert find_config_arg(["python", "run.py", "a.cntl", "--verbose"]) == "a.cntl"
    assert find_config_arg(["abfe_production"]) is None


def test_md_steps_from_a_real_openmm_state_xml(tmp_path: Path) -> None:
    """AToM stores its bookkeeping as global parameters of a dummy force; OpenMM's State
    serializer writes them as attributes of <Parameters>."""
    import openmm

    system = openmm.System()
    system.addParticle(1.0)
    force = openmm.CustomBondForce("1")
    for name in ("RECycle", "REMDSteps", "REStateId"):
        force.addGlobalParameter(name, 0)
    system.addForce(force)
    context = openmm.Context(
        system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference")
    )
    context.setPositions([openmm.Vec3(0, 0, 0)])
    context.setParameter("RECycle", 123_457)
    context.setParameter("REMDSteps", 12_345_600_000)  # long runs: beyond 32-bit
    state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
    path = tmp_path / "r0_ckpt.xml"
    path.write_text(openmm.XmlSerializer.serialize(state))
    assert replica_md_steps(path) == 12_345_600_000


def test_a_checkpoint_without_remdsteps_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x_ckpt.xml"
    path.write_text('<State><Parameters Lambda1="0"/></State>')
    with pytest.raises(EngineFailure, match="no REMDSteps"):
        replica_md_steps(path)
    path.write_text("<State><Param")
    with pytest.raises(EngineFailure, match="not a readable"):
        replica_md_steps(path)


def _ckpt(path: Path, md_steps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<State><Parameters RECycle="1" REMDSteps="{md_steps}"/></State>')


def test_atom_round_owns_remdsteps_over_prnt_frequency_lines(tmp_path: Path) -> None:
    layout = load_atom_layout(_config(tmp_path))
    _ckpt(tmp_path / "r0" / "j_ckpt.xml", 600)
    _ckpt(tmp_path / "r1" / "j_ckpt.xml", 400)
    found = atom_round(tmp_path, "", layout)
    assert [(c.path, c.lines) for c in found.cuts] == [("r0/j.out", 3), ("r1/j.out", 2)]
    assert found.samples == 2
    (tmp_path / "r0" / "j.out").write_text("a\nb\nc\nd\npartial")
    (tmp_path / "r1" / "j.out").write_text("a\nb\n")
    apply_cuts(tmp_path, found.cuts, "checkpoint")
    assert (tmp_path / "r0" / "j.out").read_text() == "a\nb\nc\n"
    assert (tmp_path / "r1" / "j.out").read_text() == "a\nb\n"


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "j.cntl"
    path.write_text("BASENAME = 'j'\nPRNT_FREQUENCY = 200\n")
    return path


def test_fewer_lines_than_the_checkpoint_owns_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "x.out"
    path.write_text("a\nb")  # the second line is incomplete
    with pytest.raises(EngineFailure, match="has 1 complete lines, its checkpoint owns 2"):
        cut_file(path, 2, "checkpoint x.out")
    cut_file(tmp_path / "absent.out", 0, "checkpoint absent.out")  # nothing owned, nothing due


def test_line_counts_file_must_be_safe_and_present(tmp_path: Path) -> None:
    with pytest.raises(EngineFailure, match="not in the checkpoint set"):
        counted_cuts(tmp_path, "counts.json")
    (tmp_path / "counts.json").write_text(json.dumps({"out/a.log": 3}))
    assert [(c.path, c.lines) for c in counted_cuts(tmp_path, "counts.json")] == [("out/a.log", 3)]
    for bad in ({"../a.log": 1}, {"/etc/passwd": 1}, {"a.log": -1}, {"a.log": "3"}):
        (tmp_path / "counts.json").write_text(json.dumps(bad))
        with pytest.raises(EngineFailure, match="relative path"):
            counted_cuts(tmp_path, "counts.json")


def test_atom_preset_paths_follow_the_config_folder() -> None:
    from relaymd.models import CommandSettings
    from worker_entry.engines.command_preset import apply_preset

    here = apply_preset(
        CommandSettings(command="rbfe_production job.yaml", preset="atom", target_samples=5)
    )
    assert here.checkpoint_globs == ["r*/*_ckpt.xml", "starting_sample"]
    assert here.ready_marker == "ckpt_is_valid"
    sub = apply_preset(
        CommandSettings(command="abfe_production leg1/job.cntl", preset="atom", target_samples=5)
    )
    assert sub.checkpoint_globs == ["leg1/r*/*_ckpt.xml", "leg1/starting_sample"]
    assert sub.ready_marker == "leg1/ckpt_is_valid"
    assert sub.progress_globs == ["leg1/r*/*.out"]
    assert "leg1/r*/*.xtc" in sub.output_globs
