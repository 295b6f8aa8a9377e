"""Write a small TIP3P water box as OpenMM System/State/Integrator XML (an `openmm` job bundle).

    python examples/water-box/make_inputs.py OUT_DIR [--box-nm 1.6] [--seed 7]

Generated rather than shipped so the XML always matches the installed OpenMM. The integrator
has a fixed random seed, so a run is reproducible (bitwise on the Reference platform).
"""

from __future__ import annotations

import argparse
from pathlib import Path

SYSTEM_FILE = "system.xml"
STATE_FILE = "state.xml"
INTEGRATOR_FILE = "integrator.xml"


def write_water_box(
    directory: Path, box_nm: float = 1.6, seed: int = 7, platform: str = "Reference"
) -> int:
    """Write the three XML files into `directory`; returns the number of atoms."""
    import openmm as mm
    import openmm.app as app
    import openmm.unit as unit

    directory.mkdir(parents=True, exist_ok=True)
    forcefield = app.ForceField("amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, boxSize=mm.Vec3(box_nm, box_nm, box_nm) * unit.nanometer)
    cutoff = min(0.9, 0.49 * box_nm)
    system = forcefield.createSystem(
        modeller.topology,
        nonbondedMethod=app.PME,
        nonbondedCutoff=cutoff * unit.nanometer,
        constraints=app.HBonds,
    )
    integrator = mm.LangevinMiddleIntegrator(
        300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds
    )
    integrator.setRandomNumberSeed(seed)
    context = mm.Context(
        system,
        mm.LangevinMiddleIntegrator(300, 1, 0.002),
        mm.Platform.getPlatformByName("Reference"),
    )
    context.setPositions(modeller.positions)
    mm.LocalEnergyMinimizer.minimize(context, maxIterations=100)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    state = context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=True)
    (directory / SYSTEM_FILE).write_text(mm.XmlSerializer.serialize(system))
    (directory / INTEGRATOR_FILE).write_text(mm.XmlSerializer.serialize(integrator))
    (directory / STATE_FILE).write_text(mm.XmlSerializer.serialize(state))
    with (directory / "topology.pdb").open("w") as fh:
        app.PDBFile.writeFile(modeller.topology, state.getPositions(), fh)
    return int(system.getNumParticles())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--box-nm", type=float, default=1.6)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    atoms = write_water_box(args.out_dir, args.box_nm, args.seed)
    print(f"{atoms} atoms written to {args.out_dir}")


if __name__ == "__main__":
    main()
