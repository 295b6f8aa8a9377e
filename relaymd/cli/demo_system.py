"""The demo's input: a small TIP3P water box (about 1000 atoms, PME), generated with OpenMM.

Generated at demo time rather than shipped, so it always matches the installed OpenMM. The
number of steps is sized from a short timing run on this machine, so the job spans several
short segments whether the CPU is fast or slow.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

SYSTEM_FILE = "system.xml"
STATE_FILE = "state.xml"
INTEGRATOR_FILE = "integrator.xml"


class DemoInputs(BaseModel):
    directory: Path
    atoms: int
    steps_per_second: float


def write_water_box(directory: Path, box_nm: float = 2.2, timing_steps: int = 300) -> DemoInputs:
    """Write system/state/integrator XML for an equilibrated-enough water box and time it."""
    import openmm as mm
    import openmm.app as app
    import openmm.unit as unit

    directory.mkdir(parents=True, exist_ok=True)
    forcefield = app.ForceField("amber14/tip3pfb.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, boxSize=mm.Vec3(box_nm, box_nm, box_nm) * unit.nanometer)
    system = forcefield.createSystem(
        modeller.topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=0.9 * unit.nanometer,
        constraints=app.HBonds,
    )
    integrator = mm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds
    )
    integrator.setRandomNumberSeed(2024)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("CPU"))
    context.setPositions(modeller.positions)
    mm.LocalEnergyMinimizer.minimize(context, maxIterations=200)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 2024)
    state = context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=True)
    (directory / SYSTEM_FILE).write_text(mm.XmlSerializer.serialize(system))
    (directory / INTEGRATOR_FILE).write_text(mm.XmlSerializer.serialize(integrator))
    (directory / STATE_FILE).write_text(mm.XmlSerializer.serialize(state))

    integrator.step(20)  # warm-up: first steps include kernel setup
    started = time.perf_counter()
    integrator.step(timing_steps)
    rate = timing_steps / max(time.perf_counter() - started, 1e-6)
    del context
    return DemoInputs(directory=directory, atoms=system.getNumParticles(), steps_per_second=rate)
