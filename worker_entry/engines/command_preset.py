"""Preset `atom`: what the command engine knows about AToM-OpenMM's files without being told."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from relaymd.atom_config import AtomConfigError, AtomLayout, load_atom_layout
from relaymd.models import CommandSettings
from worker_entry.engines.base import EngineFailure

# starting_sample: written once when MAX_SAMPLES is "+N"; without it the target moves every hop.
ATOM_CHECKPOINT_GLOBS = ["r*/*_ckpt.xml", "starting_sample"]
ATOM_READY_MARKER = "ckpt_is_valid"
ATOM_PROGRESS_GLOBS = ["r*/*.out"]
ATOM_OUTPUT_GLOBS = ["r*/*.out", "r*/*.xtc", "r*/*.dcd", "*.log"]


def atom_dir(settings: CommandSettings) -> str:
    """AToM works in its config file's folder: the preset's paths are relative to it."""
    config = settings.atom_config_path()
    parent = PurePosixPath(config).parent.as_posix() if config else "."
    return "" if parent == "." else parent


def apply_preset(settings: CommandSettings) -> CommandSettings:
    """Fill what a preset knows; explicit settings win."""
    if settings.preset != "atom":
        return settings
    here = atom_dir(settings)

    def under(globs: list[str]) -> list[str]:
        return [PurePosixPath(here, g).as_posix() if here else g for g in globs]

    return settings.model_copy(
        update={
            "checkpoint_globs": settings.checkpoint_globs or under(ATOM_CHECKPOINT_GLOBS),
            "ready_marker": settings.ready_marker or under([ATOM_READY_MARKER])[0],
            "progress_globs": settings.progress_globs or under(ATOM_PROGRESS_GLOBS),
            "output_globs": settings.output_globs or under(ATOM_OUTPUT_GLOBS),
        }
    )


def load_preset_layout(settings: CommandSettings, work_dir: Path) -> AtomLayout | None:
    """The AToM layout (replicas, file names) from the bundle's config; None without the preset."""
    config = settings.atom_config_path()
    if settings.preset != "atom":
        return None
    if config is None:
        raise EngineFailure(
            "preset atom: no AToM config file in engine.command (an argument ending in "
            ".cntl, .yaml, .yml or .json) and no engine.atom_config"
        )
    try:
        return load_atom_layout(work_dir / config)
    except AtomConfigError as exc:
        raise EngineFailure(f"engine.atom_config: {exc}") from None
