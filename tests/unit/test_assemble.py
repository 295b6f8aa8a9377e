"""relaymd.assemble on small DCD/CSV chunks written by OpenMM's own DCDFile; read back by mdtraj."""

from __future__ import annotations

import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest

from relaymd.assemble import AssembleError, assemble_outputs

ATOMS = 3
HEADER = '#"Step","Time (ps)","Potential Energy (kJ/mole)"'


def _topology() -> object:
    import openmm.app as app

    topology = app.Topology()
    residue = topology.addResidue("HOH", topology.addChain())
    for name, element in (("O", "O"), ("H1", "H"), ("H2", "H")):
        topology.addAtom(name, app.element.Element.getBySymbol(element), residue)
    return topology


def _frame(step: int, epoch: int) -> np.ndarray:
    """Coordinates that name their step and epoch, so the test sees which chunk won."""
    return np.full((ATOMS, 3), step / 100 + epoch / 1000)


def _chunk(root: Path, epoch: int, start: int, end: int, every: int = 10) -> None:
    """A chunk as the worker stores it: frames/rows on multiples of their interval, as
    OpenMM's reporters write them."""
    import openmm.app as app
    import openmm.unit as unit

    folder = root / "outputs" / str(epoch)
    folder.mkdir(parents=True, exist_ok=True)
    first = (start // every + 1) * every
    with (folder / f"trajectory.{start:010d}-{end:010d}.dcd").open("wb") as fh:
        dcd = app.DCDFile(fh, _topology(), 0.002 * unit.picoseconds, first, every)
        for step in range(first, end + 1, every):
            dcd.writeModel(_frame(step, epoch) * unit.nanometer)
    first_row = (start // 5 + 1) * 5
    rows = [f"{step},{(step - start) * 0.002},{-step}.5" for step in range(first_row, end + 1, 5)]
    (folder / f"state_data.{start:010d}-{end:010d}.csv").write_text("\n".join([HEADER, *rows]))


def test_chunks_join_in_numeric_epoch_order_and_the_later_epoch_wins(tmp_path: Path) -> None:
    _chunk(tmp_path, 1, 0, 20)
    _chunk(tmp_path, 1, 20, 40)  # killed: its checkpoint at 40 never reached storage
    _chunk(tmp_path, 2, 20, 30)
    _chunk(tmp_path, 10, 30, 50)  # "10" sorts before "2" as a string
    made = assemble_outputs(tmp_path)
    killed = tmp_path / "outputs" / "1"
    assert made.chunks_dropped == [
        killed / "trajectory.0000000020-0000000040.dcd",
        killed / "state_data.0000000020-0000000040.csv",
    ]
    (tmp_path / "top.pdb").write_text(_pdb())
    traj = mdtraj.load(str(made.trajectory), top=str(tmp_path / "top.pdb"))
    steps_epochs = [(10, 1), (20, 1), (30, 2), (40, 10), (50, 10)]
    expected = np.stack([_frame(s, e) for s, e in steps_epochs]).astype(np.float32)
    assert np.allclose(traj.xyz, expected, atol=1e-6)
    lines = made.state_data.read_text().splitlines() if made.state_data else []
    assert lines[0] == HEADER and len(lines) == 1 + 10
    assert [line.split(",")[0] for line in lines[1:]] == [str(s) for s in range(5, 51, 5)]
    # Each chunk's time restarted; the table's runs on as step x 0.002 ps.
    assert [float(line.split(",")[1]) for line in lines[1:]] == pytest.approx(
        [s * 0.002 for s in range(5, 51, 5)]
    )


def test_a_gap_is_named_not_papered_over(tmp_path: Path) -> None:
    _chunk(tmp_path, 1, 0, 20)
    _chunk(tmp_path, 3, 40, 60)
    with pytest.raises(AssembleError, match=r"steps 20\.\.40 are missing"):
        assemble_outputs(tmp_path)
    assert not (tmp_path / "assembled" / "trajectory.dcd").exists()


def test_a_chunk_without_frames_is_no_gap(tmp_path: Path) -> None:
    # A segment checkpointed 8 steps after it resumed: no frame step (every 10) fell in
    # (20, 28], so the worker stored no trajectory chunk for it, only state-data rows.
    _chunk(tmp_path, 1, 0, 20)
    _chunk(tmp_path, 2, 20, 28)
    _chunk(tmp_path, 2, 28, 50)
    (tmp_path / "outputs" / "2" / "trajectory.0000000020-0000000028.dcd").unlink()
    made = assemble_outputs(tmp_path)
    (tmp_path / "top.pdb").write_text(_pdb())
    traj = mdtraj.load(str(made.trajectory), top=str(tmp_path / "top.pdb"))
    steps_epochs = [(10, 1), (20, 1), (30, 2), (40, 2), (50, 2)]
    expected = np.stack([_frame(s, e) for s, e in steps_epochs]).astype(np.float32)
    assert np.allclose(traj.xyz, expected, atol=1e-6)
    lines = made.state_data.read_text().splitlines() if made.state_data else []
    assert [line.split(",")[0] for line in lines[1:]] == [str(s) for s in range(5, 51, 5)]


def test_a_gap_holding_a_frame_step_is_still_named(tmp_path: Path) -> None:
    # (20, 30] holds frame step 30: its chunk is missing, not empty.
    _chunk(tmp_path, 1, 0, 20)
    _chunk(tmp_path, 2, 20, 30)
    _chunk(tmp_path, 2, 30, 50)
    (tmp_path / "outputs" / "2" / "trajectory.0000000020-0000000030.dcd").unlink()
    with pytest.raises(AssembleError, match=r"steps 20\.\.30 are missing"):
        assemble_outputs(tmp_path)


def test_the_range_runs_to_the_verified_step_only_when_nothing_was_due_after_the_last_chunk(
    tmp_path: Path,
) -> None:
    # The job completed at 44, but its last chunk ends at 41: no frame (every 10) and no row
    # (every 5) fell in (41, 44], so there is nothing missing and the assembly covers 0..44.
    _chunk(tmp_path, 1, 0, 20)
    _chunk(tmp_path, 2, 20, 41)
    assert assemble_outputs(tmp_path).last_step == 41
    assert assemble_outputs(tmp_path, through_step=44).last_step == 44
    # Row 45 was due before step 46: that stretch is not accounted for, so it is not claimed.
    assert assemble_outputs(tmp_path, through_step=46).last_step == 41


def test_a_truncated_chunk_is_refused(tmp_path: Path) -> None:
    _chunk(tmp_path, 1, 0, 20)
    path = next((tmp_path / "outputs" / "1").glob("*.dcd"))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(AssembleError, match="ends inside a frame"):
        assemble_outputs(tmp_path)


def _pdb() -> str:
    import io

    import openmm.app as app
    import openmm.unit as unit

    out = io.StringIO()
    app.PDBFile.writeFile(_topology(), np.zeros((ATOMS, 3)) * unit.nanometer, out)
    return out.getvalue()


def test_xtc_without_mdtraj_says_how_to_add_it_and_keeps_the_dcd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    _chunk(tmp_path, 1, 0, 20)
    (tmp_path / "top.pdb").write_text(_pdb())
    monkeypatch.setitem(sys.modules, "mdtraj", None)  # as after `uv tool install '.[operator]'`
    with pytest.raises(AssembleError) as caught:
        assemble_outputs(tmp_path, xtc=True, topology=tmp_path / "top.pdb")
    assert "uv tool install '.[operator]' --with mdtraj" in str(caught.value)
    assert (tmp_path / "assembled" / "trajectory.dcd").is_file()
