"""The OpenMM engine's output files (trajectory, state data), closed into one chunk per
checkpoint so each checkpoint carries exactly the outputs written since the previous one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import IO, TYPE_CHECKING

from relaymd.models import OpenMMSettings

if TYPE_CHECKING:
    from openmm.app import Simulation

TRAJECTORY_FILE = "trajectory.dcd"
STATE_DATA_FILE = "state_data.csv"
OUTPUT_FILES = (TRAJECTORY_FILE, STATE_DATA_FILE)
OUTPUT_DIR = "relaymd-outputs"


def chunk_name(name: str, start_step: int, end_step: int) -> str:
    """`trajectory.dcd` written over steps (start, end] -> `trajectory.0000001000-0000002000.dcd`.

    Zero-padded so a listing sorts in step order; the steps make any overlap between a killed
    segment's last chunk and its successor's first one visible.
    """
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}.{start_step:010d}-{end_step:010d}{dot}{suffix}"


class OutputChunks:
    """The simulation's reporters, writing under `work_dir/relaymd-outputs` from `start_step`."""

    def __init__(
        self, simulation: Simulation, settings: OpenMMSettings, work_dir: Path, start_step: int
    ) -> None:
        self.simulation = simulation
        self.settings = settings
        self.out_dir = work_dir / OUTPUT_DIR
        self._chunk_start = start_step
        self._handles: list[IO[str]] = []

    def open(self) -> None:
        """Attach fresh reporters that write the next chunk."""
        import openmm.app as app

        self.out_dir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        simulation = self.simulation
        if s.dcd_every_steps:
            simulation.reporters.append(
                app.DCDReporter(str(self.out_dir / TRAJECTORY_FILE), s.dcd_every_steps)
            )
        handle = (self.out_dir / STATE_DATA_FILE).open("w")
        self._handles.append(handle)
        simulation.reporters.append(
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

    def take(self, into: Path, end_step: int) -> list[tuple[str, Path]]:
        """Close the output files written since the last checkpoint and move the non-empty
        ones into `into`, named by their steps."""
        self.close()
        chunk: list[tuple[str, Path]] = []
        for name in OUTPUT_FILES:
            path = self.out_dir / name
            if path.is_file() and path.stat().st_size > 0:
                into.mkdir(parents=True, exist_ok=True)
                target = into / chunk_name(name, self._chunk_start, end_step)
                shutil.move(path, target)
                chunk.append((target.name, target))
            path.unlink(missing_ok=True)
        self._chunk_start = end_step
        return chunk

    def close(self) -> None:
        """Detach the reporters and close their files (DCDReporter keeps its own open)."""
        for reporter in self.simulation.reporters:
            out = getattr(reporter, "_out", None)
            if out is not None and hasattr(out, "close"):
                out.close()
        self.simulation.reporters.clear()
        for handle in self._handles:
            handle.close()
        self._handles.clear()
