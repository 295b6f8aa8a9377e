"""The built-in OpenMM engine.

Resume: OpenMM's own checkpoint on the same platform (restores positions, velocities, step
count and the integrator's RNG state, so a Reference-platform relay is bitwise identical to
an uninterrupted run); the portable State XML when the platform differs or the checkpoint
does not load. Every checkpoint holds both, plus the step count.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from relaymd.models import OpenMMSettings
from worker_entry.engines.base import (
    CheckpointFiles,
    Engine,
    EngineFailure,
    EngineResult,
    OpenMMCheckpointInfo,
    Outcome,
    PendingCheckpoint,
    Restored,
    SegmentHooks,
)
from worker_entry.logging import get_logger

log = get_logger(__name__)

PREFERRED_PLATFORMS = ("CUDA", "OpenCL", "CPU")
TARGET_CHUNK_S = 0.5  # stop/control/deadline are checked between chunks this long
TRAJECTORY_FILE = "trajectory.dcd"
STATE_DATA_FILE = "state_data.csv"
FILES = CheckpointFiles()
OUTPUT_FILES = (TRAJECTORY_FILE, STATE_DATA_FILE)


def chunk_name(name: str, start_step: int, end_step: int) -> str:
    """`trajectory.dcd` written over steps (start, end] -> `trajectory.0000001000-0000002000.dcd`.

    Zero-padded so a listing sorts in step order; the steps make any overlap between a killed
    segment's last chunk and its successor's first one visible.
    """
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{start_step:010d}-{end_step:010d}{dot}{suffix}"


def choose_platform(requested: str | None) -> Any:
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


def _deserialize(path: Path, field: str) -> Any:
    import openmm as mm

    try:
        return mm.XmlSerializer.deserialize(path.read_text())
    except Exception as exc:
        raise EngineFailure(f"engine.{field}: {path.name} is not valid OpenMM XML: {exc}") from None


def _anonymous_topology(system: Any) -> Any:
    """A topology of N unnamed atoms, enough for DCDReporter when no PDB is given."""
    import openmm.app as app

    topology = app.Topology()
    residue = topology.addResidue("SYS", topology.addChain())
    for index in range(system.getNumParticles()):
        topology.addAtom(f"X{index}", None, residue)
    if system.usesPeriodicBoundaryConditions():
        topology.setPeriodicBoxVectors(system.getDefaultPeriodicBoxVectors())
    return topology


class OpenMMEngine(Engine):
    name = "openmm"

    def __init__(self, settings: OpenMMSettings) -> None:
        self.settings = settings
        self.total_steps = settings.total_steps
        self.simulation: Any = None
        self.platform_name = ""
        self._reporter_files: list[Any] = []
        self._out_dir = Path()
        self._chunk_start = 0
        self._step_ps = 0.0
        self._last_checkpoint_step: int | None = None

    # -- setup -------------------------------------------------------------------------
    def _build(self, work_dir: Path) -> tuple[Any, Any, Any, Any]:
        """(topology, system, integrator, initial State or positions)."""
        import openmm as mm
        import openmm.app as app
        import openmm.unit as unit

        s = self.settings
        if s.pdb is not None:
            pdb = app.PDBFile(str(_input(work_dir, s.pdb, "pdb")))
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
                raise EngineFailure(f"engine.pdb {s.pdb}: cannot build a system: {exc}") from None
            i = s.integrator_settings
            integrator = mm.LangevinMiddleIntegrator(
                i.temperature_k * unit.kelvin,
                i.friction_per_ps / unit.picosecond,
                i.timestep_fs * unit.femtoseconds,
            )
            return pdb.topology, system, integrator, pdb.positions
        assert s.system is not None
        system = _deserialize(_input(work_dir, s.system, "system"), "system")
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
        return topology, system, integrator, state

    def prepare(self, work_dir: Path, restored: Restored | None, platform: str | None) -> None:
        import openmm as mm
        import openmm.app as app
        import openmm.unit as unit

        topology, system, integrator, initial = self._build(work_dir)
        chosen = choose_platform(platform or self.settings.platform)
        self.platform_name = chosen.getName()
        try:
            self.simulation = app.Simulation(topology, system, integrator, chosen)
        except Exception as exc:
            raise EngineFailure(
                f"cannot create an OpenMM context on {self.platform_name}: {exc}"
            ) from None
        self._step_ps = integrator.getStepSize().value_in_unit(unit.picosecond)
        sim = self.simulation
        if restored is not None:
            self._resume(restored)
        elif isinstance(initial, mm.State):
            sim.context.setState(initial)
            sim.currentStep = 0  # the job's steps count from its input state
            self.resumed_from = "start"
        elif initial is not None:
            sim.context.setPositions(initial)
            mm.LocalEnergyMinimizer.minimize(sim.context, maxIterations=500)
            sim.context.setVelocitiesToTemperature(
                self.settings.integrator_settings.temperature_k * unit.kelvin
            )
            sim.currentStep = 0
            self.resumed_from = "start"
        else:
            raise EngineFailure("engine.state: serialized inputs need a State XML to start from")
        self.start_step = int(sim.currentStep)
        if self.start_step > self.settings.total_steps:
            raise EngineFailure(
                f"checkpoint is at step {self.start_step}, "
                f"beyond total_steps {self.settings.total_steps}"
            )
        self._out_dir = work_dir / "relaymd-outputs"
        self._chunk_start = self.start_step
        self._open_reporters()

    def _resume(self, restored: Restored) -> None:
        sim = self.simulation
        step = restored.manifest.step
        chk = restored.directory / FILES.checkpoint
        state_xml = restored.directory / FILES.state
        if restored.manifest.platform == self.platform_name and chk.is_file():
            try:
                sim.loadCheckpoint(str(chk))
                self.resumed_from = "checkpoint"
            except Exception as exc:  # another GPU model or OpenMM build: use the portable state
                log.warning("checkpoint_load_failed", error=str(exc), fallback="state_xml")
        if self.resumed_from != "checkpoint":
            if not state_xml.is_file():
                raise EngineFailure(
                    f"checkpoint {restored.manifest.epoch}-{restored.manifest.seq} has no "
                    f"{FILES.state} to resume from on {self.platform_name}"
                )
            try:
                sim.loadState(str(state_xml))
            except Exception as exc:
                raise EngineFailure(f"cannot load {FILES.state} of the checkpoint: {exc}") from None
            self.resumed_from = "state_xml"
        sim.currentStep = step  # the manifest's step is authoritative
        log.info(
            "openmm_resumed", step=step, resumed_from=self.resumed_from, platform=self.platform_name
        )

    # -- outputs: one chunk per checkpoint interval ---------------------------------------
    def _open_reporters(self) -> None:
        import openmm.app as app

        self._out_dir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        sim = self.simulation
        if s.dcd_every_steps:
            sim.reporters.append(
                app.DCDReporter(str(self._out_dir / TRAJECTORY_FILE), s.dcd_every_steps)
            )
        handle = (self._out_dir / STATE_DATA_FILE).open("w")
        self._reporter_files.append(handle)
        sim.reporters.append(
            app.StateDataReporter(
                handle,
                s.report_every_steps,
                step=True,
                time=True,
                potentialEnergy=True,
                temperature=True,
                speed=True,
            )
        )

    def _take_chunk(self, into: Path, end_step: int) -> list[tuple[str, Path]]:
        """Close the output files written since the last checkpoint and move the non-empty
        ones into `into`, named by their steps."""
        self._close_reporters()
        chunk: list[tuple[str, Path]] = []
        for name in OUTPUT_FILES:
            path = self._out_dir / name
            if path.is_file() and path.stat().st_size > 0:
                into.mkdir(parents=True, exist_ok=True)
                target = into / chunk_name(name, self._chunk_start, end_step)
                shutil.move(path, target)
                chunk.append((target.name, target))
            path.unlink(missing_ok=True)
        self._chunk_start = end_step
        return chunk

    # -- running -----------------------------------------------------------------------
    def _checkpoint(self, hooks: SegmentHooks) -> None:
        import openmm

        sim = self.simulation
        step = int(sim.currentStep)
        if step == self._last_checkpoint_step:
            return  # a stop right at a periodic checkpoint: that one is the final one
        self._last_checkpoint_step = step
        started = time.monotonic()
        seq, directory = hooks.new_checkpoint_dir()
        sim.saveCheckpoint(str(directory / FILES.checkpoint))
        sim.saveState(str(directory / FILES.state))
        info = OpenMMCheckpointInfo(
            step=step,
            platform=self.platform_name,
            time_ps=sim.context.getTime().value_in_unit(openmm.unit.picosecond),
            openmm_version=openmm.__version__,
        )
        (directory / FILES.info).write_text(info.model_dump_json())
        outputs = self._take_chunk(directory / "outputs", step)
        self._open_reporters()
        hooks.submit_checkpoint(
            PendingCheckpoint(
                seq=seq,
                step=step,
                files=[
                    (name, directory / name) for name in (FILES.checkpoint, FILES.state, FILES.info)
                ],
                local_dir=directory,
                outputs=outputs,
                platform=self.platform_name,
                engine_version=openmm.__version__,
                save_s=time.monotonic() - started,
            )
        )

    def run(self, hooks: SegmentHooks, checkpoint_interval_s: float) -> EngineResult:
        sim = self.simulation
        hooks.set_platform(self.platform_name)
        total = self.settings.total_steps
        every = self.settings.checkpoint_every_steps
        step = int(sim.currentStep)
        next_ckpt = (step // every + 1) * every if every else None
        last_ckpt_at = time.monotonic()
        chunk = 10
        hooks.report_progress(step, total)
        while step < total:
            stop = hooks.check_stop()
            if stop is not None:
                self._checkpoint(hooks)
                return EngineResult(outcome=Outcome.STOPPED, step=step, stop=stop)
            n = min(chunk, total - step)
            if next_ckpt is not None:
                n = min(n, next_ckpt - step)
            started = time.monotonic()
            sim.step(n)
            elapsed = max(time.monotonic() - started, 1e-6)
            step = int(sim.currentStep)
            rate = n / elapsed
            chunk = max(1, min(100_000, int(rate * TARGET_CHUNK_S)))
            hooks.report_progress(step, total, rate * self._step_ps * 86400 / 1000)
            if step >= total:
                break
            if next_ckpt is not None and step >= next_ckpt:
                self._checkpoint(hooks)
                next_ckpt += every or 0
            elif next_ckpt is None and time.monotonic() - last_ckpt_at >= checkpoint_interval_s:
                self._checkpoint(hooks)
                last_ckpt_at = time.monotonic()
        self._checkpoint(hooks)  # the final state, so the result is in storage
        return EngineResult(outcome=Outcome.COMPLETED, step=step)

    def output_files(self) -> list[tuple[str, Path]]:
        # Checkpoints carry the outputs up to them; this is what came after the last one
        # (nothing, after a stop or completion: both end with a checkpoint).
        if self.simulation is None:
            return []
        return self._take_chunk(self._out_dir / "tail", int(self.simulation.currentStep))

    def _close_reporters(self) -> None:
        if self.simulation is not None:
            for reporter in self.simulation.reporters:
                out = getattr(reporter, "_out", None)
                if out is not None and hasattr(out, "close"):
                    out.close()
            self.simulation.reporters.clear()
        for handle in self._reporter_files:
            handle.close()
        self._reporter_files.clear()

    def close(self) -> None:
        self._close_reporters()
        self.simulation = None
