"""`prepare_openmm_job`: an OpenMM Simulation (or System) as a job directory for `submit`.

Writes what the openmm engine reads: serialized System, State and
Integrator XML, a PDB topology (so the trajectory has atom names) and relaymd.yaml.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from relaymd.api import RelayMDError
from relaymd.submission.spec import SPEC_FILE

# The files of an `openmm` job directory, as this module and the demo's water box write them.
SYSTEM_FILE = "system.xml"
STATE_FILE = "state.xml"
INTEGRATOR_FILE = "integrator.xml"
TOPOLOGY_FILE = "topology.pdb"


class PrepareError(RelayMDError):
    """The simulation cannot be written as a job (missing positions, topology, ...)."""


def _check_atom_counts(system: Any, topology: Any, positions: int) -> None:
    particles = system.getNumParticles()
    if topology.getNumAtoms() != particles:
        raise PrepareError(
            f"topology has {topology.getNumAtoms()} atoms, the system {particles} particles"
        )
    if positions != particles:
        raise PrepareError(f"{positions} positions for the system's {particles} particles")


def prepare_openmm_job(
    simulation_or_system: Any,
    dest: str | Path,
    *,
    steps: int,
    title: str | None = None,
    integrator: Any = None,
    positions: Any = None,
    topology: Any = None,
    report_every_steps: int = 1000,
    dcd_every_steps: int | None = 5000,
    checkpoint_interval_s: float = 600.0,
    gpus: int = 1,
    platform: Literal["CUDA", "OpenCL", "CPU", "Reference"] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a job directory for `Client.submit` / `relaymd submit` and return its path.

    `simulation_or_system` is an `openmm.app.Simulation` (its system, integrator, current
    positions, velocities and box, and topology are used) or an `openmm.System`, which then
    needs `integrator`, `positions` and `topology`. The State XML keeps velocities, so a
    minimized and equilibrated simulation continues where it is.
    """
    import openmm as mm
    import openmm.app as app
    import yaml

    from relaymd.models import JobSpec, OpenMMSettings, Resources

    directory = Path(dest).expanduser()
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise PrepareError(f"{directory} is not empty; choose a new folder or overwrite=True")
    if isinstance(simulation_or_system, app.Simulation):
        sim = simulation_or_system
        system, integrator, topology = sim.system, sim.integrator, sim.topology
        state = sim.context.getState(
            getPositions=True, getVelocities=True, getParameters=True, enforcePeriodicBox=False
        )
    elif isinstance(simulation_or_system, mm.System):
        system = simulation_or_system
        if integrator is None or positions is None or topology is None:
            raise PrepareError("an openmm.System needs integrator=, positions= and topology=")
        _check_atom_counts(system, topology, len(positions))
        # A copy: OpenMM binds an integrator to one Context, and the caller's may run one.
        context = mm.Context(
            system, copy.deepcopy(integrator), mm.Platform.getPlatformByName("Reference")
        )
        context.setPositions(positions)
        state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
        del context
    else:
        raise PrepareError(
            f"expected an openmm.app.Simulation or openmm.System, got {type(simulation_or_system)}"
        )
    _check_atom_counts(system, topology, topology.getNumAtoms())
    spec = JobSpec(
        title=title or f"openmm: {system.getNumParticles()} atoms, {steps} steps",
        engine=OpenMMSettings(
            system=SYSTEM_FILE,
            state=STATE_FILE,
            integrator=INTEGRATOR_FILE,
            topology=TOPOLOGY_FILE,
            total_steps=steps,
            report_every_steps=report_every_steps,
            dcd_every_steps=dcd_every_steps,
            platform=platform,
        ),
        resources=Resources(gpus=gpus),
        checkpoint_interval_s=checkpoint_interval_s,
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / SYSTEM_FILE).write_text(mm.XmlSerializer.serialize(system))
    (directory / INTEGRATOR_FILE).write_text(mm.XmlSerializer.serialize(integrator))
    (directory / STATE_FILE).write_text(mm.XmlSerializer.serialize(state))
    with (directory / TOPOLOGY_FILE).open("w") as fh:
        app.PDBFile.writeFile(topology, state.getPositions(), fh, keepIds=True)
    (directory / SPEC_FILE).write_text(
        yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    )
    return directory
