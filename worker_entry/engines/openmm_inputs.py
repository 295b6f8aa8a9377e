"""What an OpenMM job starts from: the system, integrator and initial state or positions built
from the bundle's files, and the platform to run them on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from relaymd.models import OpenMMSettings
from worker_entry.engines.base import EngineFailure

if TYPE_CHECKING:
    from openmm import Integrator, Platform, State, System
    from openmm.app import Topology
    from openmm.unit import Quantity

PREFERRED_PLATFORMS = ("CUDA", "OpenCL", "CPU")


class SystemInputs(NamedTuple):
    topology: Topology
    system: System
    integrator: Integrator
    initial: State | Quantity | None  # a State XML, PDB positions, or nothing given


def choose_platform(requested: str | None) -> Platform:
    import openmm as mm

    available = [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]
    if requested is not None:
        if requested not in available:
            raise EngineFailure(
                f"OpenMM platform {requested} is not available on this node "
                f"(available: {', '.join(available)})"
            )
        return mm.Platform.getPlatformByName(requested)
    for name in PREFERRED_PLATFORMS:
        if name in available:
            return mm.Platform.getPlatformByName(name)
    return mm.Platform.getPlatformByName("Reference")


def _input(work_dir: Path, name: str, field: str) -> Path:
    path = (work_dir / name).resolve()
    if not path.is_relative_to(work_dir.resolve()):
        raise EngineFailure(f"engine.{field} = {name!r} points outside the bundle")
    if not path.is_file():
        raise EngineFailure(f"engine.{field}: {name!r} is not in the job bundle")
    return path


def _deserialize(path: Path, field: str) -> object:
    import openmm as mm

    try:
        return mm.XmlSerializer.deserialize(path.read_text())
    except Exception as exc:
        raise EngineFailure(f"engine.{field}: {path.name} is not valid OpenMM XML: {exc}") from None


def _anonymous_topology(system: System) -> Topology:
    """A topology of N unnamed atoms, enough for DCDReporter when no PDB is given."""
    import openmm.app as app

    topology = app.Topology()
    residue = topology.addResidue("SYS", topology.addChain())
    for index in range(system.getNumParticles()):
        topology.addAtom(f"X{index}", None, residue)
    if system.usesPeriodicBoundaryConditions():
        topology.setPeriodicBoxVectors(system.getDefaultPeriodicBoxVectors())
    return topology


def _from_pdb(s: OpenMMSettings, work_dir: Path, pdb_name: str) -> SystemInputs:
    """A PDB and force fields: the system is built here, started from minimised positions."""
    import openmm as mm
    import openmm.app as app
    import openmm.unit as unit

    pdb = app.PDBFile(str(_input(work_dir, pdb_name, "pdb")))
    try:
        forcefield = app.ForceField(*s.forcefields)
    except Exception as exc:
        raise EngineFailure(f"engine.forcefields {s.forcefields}: {exc}") from None
    periodic = pdb.topology.getPeriodicBoxVectors() is not None
    try:
        system = forcefield.createSystem(
            pdb.topology,
            nonbondedMethod=app.PME if periodic else app.NoCutoff,
            nonbondedCutoff=s.cutoff_nm * unit.nanometer,
            constraints=app.HBonds,
        )
    except Exception as exc:
        raise EngineFailure(f"engine.pdb {pdb_name}: cannot build a system: {exc}") from None
    i = s.integrator_settings
    integrator = mm.LangevinMiddleIntegrator(
        i.temperature_k * unit.kelvin,
        i.friction_per_ps / unit.picosecond,
        i.timestep_fs * unit.femtoseconds,
    )
    return SystemInputs(pdb.topology, system, integrator, pdb.positions)


def _from_xml(s: OpenMMSettings, work_dir: Path, system_name: str) -> SystemInputs:
    """Serialized System, Integrator and (optionally) State XML files."""
    import openmm as mm
    import openmm.app as app

    system = _deserialize(_input(work_dir, system_name, "system"), "system")
    if s.integrator is None:
        raise EngineFailure("engine.integrator: serialized inputs need an integrator XML")
    integrator = _deserialize(_input(work_dir, s.integrator, "integrator"), "integrator")
    state = None
    if s.state is not None:
        state = _deserialize(_input(work_dir, s.state, "state"), "state")
    if s.topology is not None:
        topology = app.PDBFile(str(_input(work_dir, s.topology, "topology"))).topology
    else:
        topology = _anonymous_topology(system)
    if not isinstance(system, mm.System) or not isinstance(integrator, mm.Integrator):
        raise EngineFailure("engine.system/integrator: XML holds the wrong kind of object")
    return SystemInputs(topology, system, integrator, state)


def build_inputs(settings: OpenMMSettings, work_dir: Path) -> SystemInputs:
    if settings.pdb is not None:
        return _from_pdb(settings, work_dir, settings.pdb)
    assert settings.system is not None
    return _from_xml(settings, work_dir, settings.system)
