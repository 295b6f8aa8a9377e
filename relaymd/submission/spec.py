"""A job's spec: DIR/relaymd.yaml read as YAML, command-line flags applied on top, validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from relaymd.models import JobSpec
from relaymd.submission.errors import SubmitError

SPEC_FILE = "relaymd.yaml"


class SpecOverrides(BaseModel):
    """Command-line flags; a set field replaces the value from relaymd.yaml."""

    engine: str | None = None
    command: str | None = None
    checkpoint_globs: list[str] = Field(default_factory=list)
    steps: int | None = None
    gpus: int | None = None
    min_vram_gib: float | None = None
    clusters: list[str] = Field(default_factory=list)
    title: str | None = None
    priority: int | None = None
    max_retries: int | None = None
    image: str | None = None
    checkpoint_interval_s: float | None = None


def _format_spec_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid job spec"]
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against docs/configuration.md"
        lines.append(f"  {loc or '(top level)'}: {message}")
    return "\n".join(lines)


def _read_spec_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except PermissionError:
        raise SubmitError(f"{path}: cannot read the job spec (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise SubmitError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); save the file as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SubmitError(f"{path}:{where}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SubmitError(f"{path}: expected a mapping (title:, engine:, ...) at the top level")
    return data


def _apply_overrides(data: dict[str, Any], flags: SpecOverrides, directory: Path) -> None:
    engine: dict[str, Any] = dict(data.get("engine") or {})
    if flags.engine is not None and engine.get("kind") != flags.engine:
        engine = {"kind": flags.engine}
    if flags.command is not None:
        engine.setdefault("kind", "command")
        engine["command"] = flags.command
    if flags.checkpoint_globs:
        engine["checkpoint_globs"] = list(flags.checkpoint_globs)
    if flags.steps is not None:
        engine.setdefault("kind", "openmm")
        engine["total_steps"] = flags.steps
    if engine:
        engine.setdefault("kind", "openmm")
        data["engine"] = engine
    if flags.title is not None:
        data["title"] = flags.title
    data.setdefault("title", directory.resolve().name)
    resources: dict[str, Any] = dict(data.get("resources") or {})
    if flags.gpus is not None:
        resources["gpus"] = flags.gpus
    if flags.min_vram_gib is not None:
        resources["min_vram_gib"] = flags.min_vram_gib
    if resources:
        data["resources"] = resources
    if flags.clusters:
        placement: dict[str, Any] = dict(data.get("placement") or {})
        placement["allowed_clusters"] = list(flags.clusters)
        data["placement"] = placement
    for name in ("priority", "max_retries", "image", "checkpoint_interval_s"):
        value = getattr(flags, name)
        if value is not None:
            data[name] = value


def build_spec(directory: Path, flags: SpecOverrides | None = None) -> JobSpec:
    """The job spec from DIR/relaymd.yaml (if any) with flags applied on top."""
    flags = flags or SpecOverrides()
    if not directory.exists():
        raise SubmitError(f"{directory}: no such directory", kind="missing")
    if not directory.is_dir():
        raise SubmitError(f"{directory}: not a directory (give the job's input folder)")
    spec_path = directory / SPEC_FILE
    data = _read_spec_file(spec_path) if spec_path.is_file() else {}
    _apply_overrides(data, flags, directory)
    if "engine" not in data:
        raise SubmitError(
            f"{spec_path}: engine: missing; write a {SPEC_FILE} or pass --engine/--steps/--command"
        )
    source = str(spec_path) if spec_path.is_file() else f"{directory} (flags)"
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SubmitError(_format_spec_error(source, exc)) from None
