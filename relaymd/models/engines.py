"""Engine settings: what a job runs inside one segment."""

from __future__ import annotations

import shlex
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from relaymd.atom_config import find_config_arg
from relaymd.models.base import UserModel


class IntegratorSettings(UserModel):
    """Langevin integrator used when the bundle gives a PDB instead of serialized XML."""

    model_config = ConfigDict(frozen=True)  # part of a frozen JobSpec (ADR 0029)

    temperature_k: float = Field(300.0, gt=0)
    friction_per_ps: float = Field(1.0, ge=0)
    timestep_fs: float = Field(2.0, gt=0)


_XML_INPUTS = ("system", "state", "integrator")


class OpenMMSettings(UserModel):
    """The built-in engine. Files are paths inside the job bundle.

    Either `system` + `state` + `integrator` (serialized XML) or `pdb` + `forcefields`.
    """

    model_config = ConfigDict(frozen=True)  # part of a frozen JobSpec (ADR 0029)

    kind: Literal["openmm"] = "openmm"
    system: str | None = "system.xml"
    state: str | None = "state.xml"
    integrator: str | None = "integrator.xml"
    # Optional PDB giving atom names for the DCD trajectory of serialized-XML inputs.
    topology: str | None = None
    pdb: str | None = None
    forcefields: list[str] = Field(default_factory=list)
    integrator_settings: IntegratorSettings = Field(default_factory=IntegratorSettings)
    # Nonbonded cutoff for `pdb` inputs (PME when the PDB has a box); under half the box.
    cutoff_nm: float = Field(1.0, gt=0)
    total_steps: int = Field(gt=0)
    checkpoint_every_steps: int | None = Field(None, gt=0)
    report_every_steps: int = Field(1000, gt=0)
    dcd_every_steps: int | None = Field(None, gt=0)
    platform: Literal["CUDA", "OpenCL", "CPU", "Reference"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _pdb_replaces_xml(cls, data: Any) -> Any:
        """A `pdb` input leaves no serialized-XML inputs (set before validation: frozen)."""
        if isinstance(data, dict) and data.get("pdb") is not None:
            return {**data, **dict.fromkeys(_XML_INPUTS)}
        return data

    @model_validator(mode="after")
    def _inputs_complete(self) -> OpenMMSettings:
        if self.pdb is not None:
            if not self.forcefields:
                raise ValueError("a `pdb` input needs `forcefields` (e.g. amber14-all.xml)")
        elif self.system is None:
            raise ValueError("give either `system` (+ `state`, `integrator`) or `pdb`")
        return self


class CommandSettings(UserModel):
    """An opaque program (e.g. AToM-OpenMM) that checkpoints to files on its own."""

    model_config = ConfigDict(frozen=True)  # part of a frozen JobSpec (ADR 0029)

    kind: Literal["command"] = "command"
    command: list[str] = Field(min_length=1)
    preset: Literal["atom"] | None = None
    checkpoint_globs: list[str] = Field(default_factory=list)
    ready_marker: str | None = None
    output_globs: list[str] = Field(default_factory=list)
    progress_globs: list[str] = Field(default_factory=list)
    log_file: str | None = None
    fatal_log_patterns: list[str] = Field(default_factory=list)
    startup_timeout_s: float = Field(600.0, gt=0)
    progress_timeout_s: float = Field(3600.0, gt=0)
    stop_grace_s: float = Field(120.0, gt=0)
    settle_s: float = Field(2.0, ge=0)
    target_samples: int | None = Field(None, gt=0)
    # Preset atom: the AToM config in the bundle (unset: the command's config argument).
    atom_config: str | None = None
    # A JSON file in the checkpoint set, {"<file>": <lines>}, that the program rewrites in
    # every checkpoint round: each named file travels with the checkpoint cut to those lines.
    output_line_counts: str | None = None

    def atom_config_path(self) -> str | None:
        """Preset atom's config file, relative to the bundle (AToM works in its folder)."""
        if self.preset != "atom":
            return None
        return self.atom_config or find_config_arg(self.command)

    @field_validator("command", mode="before")
    @classmethod
    def _split_string(cls, value: object) -> object:
        return shlex.split(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _resumable(self) -> CommandSettings:
        # Caught at submit time, not on a GPU node hours later.
        if not self.checkpoint_globs and self.preset is None:
            raise ValueError(
                "a command job needs `checkpoint_globs` (the files it resumes from, e.g. "
                "'r*/*_ckpt.xml'; --checkpoint-glob) or a `preset` such as atom"
            )
        if self.preset == "atom" and self.target_samples is None:
            raise ValueError(
                "preset atom needs `target_samples`: AToM-OpenMM can exit 0 after its GPU "
                "workers crashed, so completion is judged by the samples it reached"
            )
        return self


EngineSettings = Annotated[OpenMMSettings | CommandSettings, Field(discriminator="kind")]
