"""OpenMM checkpoint files: written together, loaded the most faithful way the node allows.

OpenMM's own checkpoint restores positions, velocities, step count and the integrator's RNG
state (a Reference-platform relay is bitwise identical to an uninterrupted run) but loads
only on the platform that wrote it; the portable State XML is the fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field

from worker_entry.engines.base import EngineFailure, Restored
from worker_entry.logging import get_logger

if TYPE_CHECKING:
    from openmm.app import Simulation

log = get_logger(__name__)


class CheckpointFiles(BaseModel):
    """Names of the files an openmm checkpoint holds."""

    checkpoint: str = "checkpoint.chk"
    state: str = "state.xml"
    info: str = "checkpoint_info.json"


class OpenMMCheckpointInfo(BaseModel):
    step: int = Field(ge=0)
    platform: str
    time_ps: float
    openmm_version: str


FILES = CheckpointFiles()


def save_checkpoint(
    simulation: Simulation, directory: Path, step: int, platform: str
) -> list[tuple[str, Path]]:
    """Write all three files into `directory`; (name, path) of each."""
    import openmm

    simulation.saveCheckpoint(str(directory / FILES.checkpoint))
    simulation.saveState(str(directory / FILES.state))
    info = OpenMMCheckpointInfo(
        step=step,
        platform=platform,
        time_ps=simulation.context.getTime().value_in_unit(openmm.unit.picosecond),
        openmm_version=openmm.__version__,
    )
    (directory / FILES.info).write_text(info.model_dump_json())
    return [(name, directory / name) for name in (FILES.checkpoint, FILES.state, FILES.info)]


def load_checkpoint(
    simulation: Simulation, restored: Restored, platform: str
) -> Literal["checkpoint", "state_xml"]:
    """Resume `simulation` at the manifest's step; which file it was resumed from."""
    step = restored.manifest.step
    chk = restored.directory / FILES.checkpoint
    state_xml = restored.directory / FILES.state
    resumed_from: Literal["checkpoint", "state_xml"] | None = None
    if restored.manifest.platform == platform and chk.is_file():
        try:
            simulation.loadCheckpoint(str(chk))
            resumed_from = "checkpoint"
        except Exception as exc:  # another GPU model or OpenMM build: use the portable state
            log.warning("checkpoint_load_failed", error=str(exc), fallback="state_xml")
    if resumed_from is None:
        if not state_xml.is_file():
            raise EngineFailure(
                f"checkpoint {restored.manifest.epoch}-{restored.manifest.seq} has no "
                f"{FILES.state} to resume from on {platform}"
            )
        try:
            simulation.loadState(str(state_xml))
        except Exception as exc:
            raise EngineFailure(f"cannot load {FILES.state} of the checkpoint: {exc}") from None
        resumed_from = "state_xml"
    simulation.currentStep = step  # the manifest's step is authoritative
    log.info("openmm_resumed", step=step, resumed_from=resumed_from, platform=platform)
    return resumed_from
