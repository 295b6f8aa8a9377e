"""What can be checked before a byte is uploaded: inputs present, clusters and image known,
the AToM config readable, outputs a relay can keep exact."""

from __future__ import annotations

from pathlib import Path

from relaymd.atom_config import AtomConfigError, load_atom_layout
from relaymd.config import LoadedConfig
from relaymd.models import CommandSettings, JobSpec, OpenMMSettings
from relaymd.submission.errors import SubmitError
from relaymd.submission.spec import SPEC_FILE


def required_inputs(spec: JobSpec) -> list[tuple[str, str]]:
    """(field, relative path) pairs the engine needs inside the bundle."""
    engine = spec.engine
    if isinstance(engine, OpenMMSettings):
        if engine.pdb is not None:
            # Force fields may be OpenMM's built-ins (amber14-all.xml), so only local
            # files that look like paths are required.
            wanted = [("engine.pdb", engine.pdb)]
            return wanted
        return [
            (f"engine.{name}", value)
            for name, value in (
                ("system", engine.system),
                ("state", engine.state),
                ("integrator", engine.integrator),
            )
            if value is not None
        ]
    assert isinstance(engine, CommandSettings)
    config = engine.atom_config_path()
    return [("engine.atom_config", config)] if config is not None else []


def check_atom_config(directory: Path, engine: CommandSettings) -> None:
    """Preset atom cuts sample files by keys of the AToM config: refuse a job without them."""
    if engine.preset != "atom":
        return
    config = engine.atom_config_path()
    if config is None:
        raise SubmitError(
            f"{directory / SPEC_FILE}: engine.command: preset atom needs the AToM config file "
            "as an argument (a .cntl, .yaml, .yml or .json path in the job directory) or "
            "engine.atom_config"
        )
    try:
        load_atom_layout(directory / config)
    except AtomConfigError as exc:
        raise SubmitError(f"{directory / SPEC_FILE}: engine.atom_config: {exc}") from None


def output_warnings(engine: CommandSettings) -> list[str]:
    """Outputs a relay cannot keep exactly consistent with the checkpoints of this spec."""
    if engine.preset == "atom" or engine.output_line_counts is not None:
        return []
    globs = [*engine.progress_globs, *engine.output_globs]
    loose = [g for g in globs if g not in engine.checkpoint_globs]
    if not loose:
        return []
    names = ", ".join(dict.fromkeys(loose))
    return [
        f"engine: outputs {names} are not exact after a hard kill: they are stored as they "
        "were when a checkpoint was taken and may hold lines written after it, which the "
        "resumed program writes again. Set engine.output_line_counts (a file the program "
        "writes in each checkpoint round) or write them only during the round and list them "
        "in checkpoint_globs (docs/job-lifecycle.md, 'Outputs and checkpoints')"
    ]


def validate_job(directory: Path, spec: JobSpec, loaded: LoadedConfig) -> None:
    """Everything checkable before a byte is uploaded: inputs present, clusters and image known."""
    for field, relative in required_inputs(spec):
        candidate = directory / relative
        if not candidate.is_file():
            raise SubmitError(
                f"{directory / SPEC_FILE}: {field}: input file {relative!r} "
                f"not found in {directory}",
                kind="missing",
            )
    known = {c.name: c for c in loaded.clusters}
    named = [*spec.placement.allowed_clusters, *spec.placement.preferred_clusters]
    unknown = [name for name in named if name not in known]
    if unknown:
        raise SubmitError(
            f"{directory}: placement: unknown cluster(s) {', '.join(unknown)}; "
            f"configured clusters: {', '.join(known) or '(none)'}"
        )
    candidates = [known[n] for n in spec.placement.allowed_clusters] or list(known.values())
    runnable = [c for c in candidates if c.native_worker is not None or spec.image in c.images]
    if not runnable:
        raise SubmitError(
            f"{directory}: image: no allowed cluster has the worker image {spec.image!r}; "
            f"add it under `images:` of a cluster profile"
        )
    if spec.resources.gpus > 1 and not isinstance(spec.engine, CommandSettings):
        # One worker process holds one CUDA context: only a command engine (AToM-OpenMM)
        # spreads over several GPUs (ADR 0026).
        raise SubmitError(
            f"{directory / SPEC_FILE}: resources.gpus: {spec.resources.gpus} GPUs need a "
            "command engine (engine.command with preset atom, or your own multi-GPU command); "
            "an OpenMM job runs on one GPU: set resources.gpus to 1"
        )
    if spec.resources.gpus > 0:
        fits = [
            c
            for c in runnable
            if any(p.gpus_per_allocation >= spec.resources.gpus for p in c.partitions)
        ]
        if not fits:
            raise SubmitError(
                f"{directory}: resources.gpus: no allowed cluster has a partition with "
                f"{spec.resources.gpus} GPU(s) per allocation (use --gpus 0 for a CPU job; "
                "for a multi-GPU job add a partition with gpus_per_allocation >= "
                f"{spec.resources.gpus} to a cluster profile)"
            )
