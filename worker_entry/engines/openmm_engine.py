"""The built-in OpenMM engine.

Resume: OpenMM's own checkpoint on the same platform (restores positions, velocities, step
count and the integrator's RNG state, so a Reference-platform relay is bitwise identical to
an uninterrupted run); the portable State XML when the platform differs or the checkpoint
does not load. Every checkpoint holds both, plus the step count.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from relaymd.models import OpenMMSettings
from worker_entry.engines.base import (
    Engine,
    EngineFailure,
    EngineResult,
    Outcome,
    Restored,
    SegmentHooks,
)
from worker_entry.engines.checkpoint_round import CheckpointRound
from worker_entry.engines.openmm_checkpoint import load_checkpoint, save_checkpoint
from worker_entry.engines.openmm_inputs import SystemInputs, build_inputs, choose_platform
from worker_entry.engines.openmm_outputs import OutputChunks

if TYPE_CHECKING:
    from openmm.app import Simulation

TARGET_CHUNK_S = 0.5  # stop/control/deadline are checked between chunks this long


class OpenMMEngine(Engine):
    name = "openmm"

    def __init__(self, settings: OpenMMSettings) -> None:
        self.settings = settings
        self.total_steps = settings.total_steps
        self.simulation: Simulation | None = None
        self.platform_name = ""
        self._outputs: OutputChunks | None = None
        self._step_ps = 0.0
        self._last_checkpoint_step: int | None = None

    # -- setup -------------------------------------------------------------------------
    def prepare(self, work_dir: Path, restored: Restored | None, platform: str | None) -> None:
        import openmm.app as app
        import openmm.unit as unit

        inputs = build_inputs(self.settings, work_dir)
        chosen = choose_platform(platform or self.settings.platform)
        self.platform_name = chosen.getName()
        try:
            sim = app.Simulation(inputs.topology, inputs.system, inputs.integrator, chosen)
        except Exception as exc:
            raise EngineFailure(
                f"cannot create an OpenMM context on {self.platform_name}: {exc}"
            ) from None
        self.simulation = sim
        self._step_ps = inputs.integrator.getStepSize().value_in_unit(unit.picosecond)
        if restored is not None:
            self.resumed_from = load_checkpoint(sim, restored, self.platform_name)
        else:
            self._start_fresh(sim, inputs)
        self.start_step = int(sim.currentStep)
        if self.start_step > self.settings.total_steps:
            raise EngineFailure(
                f"checkpoint is at step {self.start_step}, "
                f"beyond total_steps {self.settings.total_steps}"
            )
        self._outputs = OutputChunks(sim, self.settings, work_dir, self.start_step)
        self._outputs.open()

    def _start_fresh(self, sim: Simulation, inputs: SystemInputs) -> None:
        """Step 0 of the job: its input State as given, or PDB positions minimised and
        given velocities at the integrator's temperature."""
        import openmm as mm
        import openmm.unit as unit

        if isinstance(inputs.initial, mm.State):
            sim.context.setState(inputs.initial)
        elif inputs.initial is not None:
            sim.context.setPositions(inputs.initial)
            mm.LocalEnergyMinimizer.minimize(sim.context, maxIterations=500)
            sim.context.setVelocitiesToTemperature(
                self.settings.integrator_settings.temperature_k * unit.kelvin
            )
        else:
            raise EngineFailure("engine.state: serialized inputs need a State XML to start from")
        sim.currentStep = 0  # the job's steps count from its input state
        self.resumed_from = "start"

    # -- running -----------------------------------------------------------------------
    def _checkpoint(self, hooks: SegmentHooks, sim: Simulation, outputs: OutputChunks) -> None:
        import openmm

        step = int(sim.currentStep)
        if step == self._last_checkpoint_step:
            return  # a stop right at a periodic checkpoint: that one is the final one
        self._last_checkpoint_step = step
        round_ = CheckpointRound(hooks)
        files = save_checkpoint(sim, round_.directory, step, self.platform_name)
        chunk = outputs.take(round_.directory / "outputs", step)
        outputs.open()
        round_.submit(
            step=step,
            files=files,
            outputs=chunk,
            platform=self.platform_name,
            engine_version=openmm.__version__,
        )

    def run(self, hooks: SegmentHooks, checkpoint_interval_s: float) -> EngineResult:
        sim, outputs = self.simulation, self._outputs
        assert sim is not None and outputs is not None
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
                self._checkpoint(hooks, sim, outputs)
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
                self._checkpoint(hooks, sim, outputs)
                next_ckpt += every or 0
            elif next_ckpt is None and time.monotonic() - last_ckpt_at >= checkpoint_interval_s:
                self._checkpoint(hooks, sim, outputs)
                last_ckpt_at = time.monotonic()
        self._checkpoint(hooks, sim, outputs)  # the final state, so the result is in storage
        return EngineResult(outcome=Outcome.COMPLETED, step=step)

    def output_files(self) -> list[tuple[str, Path]]:
        # Checkpoints carry the outputs up to them; this is what came after the last one
        # (nothing, after a stop or completion: both end with a checkpoint).
        if self.simulation is None or self._outputs is None:
            return []
        return self._outputs.take(self._outputs.out_dir / "tail", int(self.simulation.currentStep))

    def close(self) -> None:
        if self._outputs is not None:
            self._outputs.close()
        self.simulation = None
