"""A small TIP3P water box as an `openmm` job bundle: for the demo, the examples and the tests.

Generated rather than shipped, so the XML always matches the installed OpenMM. The integrator
has a fixed random seed, so a run is reproducible (bitwise on the Reference platform). Optionally
timed on the chosen platform, so callers can size a job to span several short segments whether
the CPU is fast or slow.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from relaymd.openmm_job import INTEGRATOR_FILE, STATE_FILE, SYSTEM_FILE, TOPOLOGY_FILE


class WaterBox(BaseModel):
    directory: Path
    atoms: int
    steps_per_second: float | None = None  # measured when timing_steps > 0


def write_water_box(
    directory: Path,
    box_nm: float = 2.2,
    *,
    seed: int = 2024,
    platform: str = "CPU",
    pme: bool = True,
    timing_steps: int = 0,
) -> WaterBox:
    """Write system/state/integrator XML (and a topology PDB) for a minimized water box.

    `pme=False` uses a periodic reaction-field cutoff instead: several times faster on the
    Reference platform, which tests use for bitwise reproducibility.
    """
    import openmm as mm
    import openmm.app as app
    import openmm.unit as unit

    directory.mkdir(parents=True, exist_ok=True)
    forcefield = app.ForceField("amber14/tip3pfb.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, boxSize=mm.Vec3(box_nm, box_nm, box_nm) * unit.nanometer)
    system = forcefield.createSystem(
        modeller.topology,
        nonbondedMethod=app.PME if pme else app.CutoffPeriodic,
        nonbondedCutoff=min(0.9, 0.49 * box_nm) * unit.nanometer,
        constraints=app.HBonds,
    )
    integrator = mm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds
    )
    integrator.setRandomNumberSeed(seed)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName(platform))
    context.setPositions(modeller.positions)
    mm.LocalEnergyMinimizer.minimize(context, maxIterations=100)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    state = context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=True)
    (directory / SYSTEM_FILE).write_text(mm.XmlSerializer.serialize(system))
    (directory / INTEGRATOR_FILE).write_text(mm.XmlSerializer.serialize(integrator))
    (directory / STATE_FILE).write_text(mm.XmlSerializer.serialize(state))
    with (directory / TOPOLOGY_FILE).open("w") as fh:
        app.PDBFile.writeFile(modeller.topology, state.getPositions(), fh)

    rate = None
    if timing_steps > 0:
        integrator.step(20)  # warm-up: the first steps include kernel setup
        # Best of two, so a moment of contention does not halve the estimate.
        for _ in range(2):
            started = time.perf_counter()
            integrator.step(timing_steps)
            measured = timing_steps / max(time.perf_counter() - started, 1e-6)
            rate = max(rate or 0.0, measured)
    del context
    return WaterBox(directory=directory, atoms=system.getNumParticles(), steps_per_second=rate)
