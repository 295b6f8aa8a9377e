"""The few AToM-OpenMM config keys the relay needs to cut sample files to a checkpoint round.

AToM-OpenMM reads `.cntl` (ConfigObj: `KEY = value`), `.yaml`/`.yml` or `.json` configs. Only
flat scalar keys are read here: BASENAME, PRNT_FREQUENCY and CHECKPOINT_FILE. Used at submit
(a missing or bad key is refused before anything is uploaded) and by the worker.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import yaml
from pydantic import BaseModel, Field

CONFIG_SUFFIXES = (".cntl", ".yaml", ".yml", ".json")


class AtomConfigError(ValueError):
    """The config cannot be read or lacks a key; the message names the file and key."""


class AtomLayout(BaseModel):
    """Where AToM writes per-replica files, relative to its working directory."""

    basename: str = Field(min_length=1)
    prnt_frequency: int = Field(gt=0)
    checkpoint_file: str = Field(min_length=1)

    def out_name(self) -> str:
        return f"{self.basename}.out"


def find_config_arg(command: list[str]) -> str | None:
    """AToM's command line is `<script> <config>`: the last argument with a config suffix."""
    for arg in reversed(command[1:]):
        if arg.endswith(CONFIG_SUFFIXES):
            return arg
    return None


def _read_cntl(text: str) -> dict[str, object]:
    keys: dict[str, object] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
            value = value[1:-1]
        elif "#" in value:  # ConfigObj allows a trailing comment after an unquoted value
            value = value.split("#", 1)[0].strip()
        keys[key] = value
    return keys


def read_atom_keys(path: Path) -> dict[str, object]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise AtomConfigError(f"{path}: cannot read the AToM config: {exc.strerror}") from None
    try:
        if path.suffix == ".cntl":
            return _read_cntl(text)
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise AtomConfigError(f"{path}: not a readable AToM config: {exc}") from None
    if not isinstance(data, dict):
        raise AtomConfigError(f"{path}: expected KEY: value pairs at the top level")
    return {str(k): v for k, v in data.items()}


def _positive_int(path: Path, keys: dict[str, object], key: str) -> int:
    value = keys.get(key)
    if value is None:
        raise AtomConfigError(f"{path}: {key} is missing")
    try:
        number = float(str(value))
    except ValueError:
        raise AtomConfigError(f"{path}: {key} = {value!r} is not a number") from None
    if number <= 0 or number != int(number):
        raise AtomConfigError(f"{path}: {key} = {value!r} is not a positive integer")
    return int(number)


def load_atom_layout(path: Path) -> AtomLayout:
    keys = read_atom_keys(path)
    basename = keys.get("BASENAME")
    if not basename:
        raise AtomConfigError(f"{path}: BASENAME is missing")
    checkpoint_file = str(keys.get("CHECKPOINT_FILE") or f"{basename}_ckpt.xml")
    if PurePosixPath(checkpoint_file).name != checkpoint_file:
        raise AtomConfigError(f"{path}: CHECKPOINT_FILE = {checkpoint_file!r} is not a file name")
    return AtomLayout(
        basename=str(basename),
        prnt_frequency=_positive_int(path, keys, "PRNT_FREQUENCY"),
        checkpoint_file=checkpoint_file,
    )


def set_atom_key(path: Path, key: str, value: str) -> None:
    """Set one flat KEY in an AToM config in place (the worker's copy, e.g. NODEFILE)."""
    keys = read_atom_keys(path)  # refuses an unreadable config first
    if path.suffix == ".cntl":
        kept = [
            line for line in path.read_text().splitlines() if line.split("=", 1)[0].strip() != key
        ]
        path.write_text("\n".join([*kept, f"{key} = '{value}'"]) + "\n")
        return
    keys[key] = value
    if path.suffix == ".json":
        path.write_text(json.dumps(keys, indent=2) + "\n")
    else:
        path.write_text(yaml.safe_dump(keys, sort_keys=False))
