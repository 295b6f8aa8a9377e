"""prepare_openmm_job from an openmm.System (the Simulation path runs end to end in
tests/cli/test_python_api.py): the files it writes, read back by OpenMM and by `submit`'s
own spec reader, and the errors a notebook user gets instead of an OpenMM traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit
import pytest

from relaymd import RelayMDError, prepare_openmm_job
from relaymd.submission.spec import build_spec


def _argon_pair() -> tuple[mm.System, app.Topology, Any]:
    system = mm.System()
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(2):
        system.addParticle(39.9)
        residue = topology.addResidue("AR", chain)
        topology.addAtom("AR", app.element.argon, residue)
    positions = unit.Quantity(np.array([[0.0, 0.0, 0.0], [0.4, 0.1, 0.2]]), unit.nanometer)
    return system, topology, positions


def test_a_system_whose_integrator_already_runs_a_simulation(tmp_path: Path) -> None:
    system, topology, positions = _argon_pair()
    integrator = mm.VerletIntegrator(0.002 * unit.picoseconds)
    # The notebook's own Simulation holds the integrator: OpenMM binds one to one Context.
    held = mm.Context(system, integrator, mm.Platform.getPlatformByName("Reference"))
    job = prepare_openmm_job(
        system,
        tmp_path / "argon",
        steps=100,
        integrator=integrator,
        positions=positions,
        topology=topology,
        gpus=0,
        dcd_every_steps=None,
    )
    state = mm.XmlSerializer.deserialize((job / "state.xml").read_text())
    written = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.allclose(written, positions.value_in_unit(unit.nanometer))
    again = mm.XmlSerializer.deserialize((job / "integrator.xml").read_text())
    assert again.getStepSize() == integrator.getStepSize()
    assert app.PDBFile(str(job / "topology.pdb")).topology.getNumAtoms() == 2
    spec = build_spec(job)  # what `relaymd submit` reads
    assert spec.engine.total_steps == 100 and spec.resources.gpus == 0
    del held


@pytest.mark.parametrize(
    ("extra_particles", "kept_positions", "expected"),
    [
        (1, 2, "topology has 2 atoms, the system 3 particles"),
        (0, 1, "1 positions for the system's 2 particles"),
    ],
)
def test_atom_counts_that_do_not_match_the_system_are_refused(
    tmp_path: Path, extra_particles: int, kept_positions: int, expected: str
) -> None:
    system, topology, positions = _argon_pair()
    for _ in range(extra_particles):
        system.addParticle(39.9)
    with pytest.raises(RelayMDError, match=expected):
        prepare_openmm_job(
            system,
            tmp_path / "bad",
            steps=10,
            integrator=mm.VerletIntegrator(0.001),
            positions=positions[:kept_positions],
            topology=topology,
        )
    assert not (tmp_path / "bad").exists()  # nothing half-written


def test_neither_a_simulation_nor_a_system_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        RelayMDError, match=r"expected an openmm\.app\.Simulation or openmm\.System"
    ):
        prepare_openmm_job("system.xml", tmp_path / "x", steps=10)
    system, topology, _ = _argon_pair()
    with pytest.raises(RelayMDError, match="needs integrator=, positions= and topology="):
        prepare_openmm_job(system, tmp_path / "y", steps=10, topology=topology)
